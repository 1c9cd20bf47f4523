#if canImport(Darwin)
import Darwin
#else
import Glibc
#endif

// The sampler's selection stages: top-p over the whole vocabulary (no top-k bound) and the
// partial selection of the best candidates. They work on the sampler's preallocated buffers
// and allocate nothing.
extension Sampler {
    // MARK: - Top-p without a top-k bound

    /// Number of logit buckets below the maximum, and their width (1/32 logit);
    /// everything more than 16 below the maximum shares the last bucket.
    static let bucketCount = 512
    static let bucketsPerLogit: Float = 32

    /// Top-p over all `vocabularySize` tokens without sorting them: the tokens are
    /// binned by distance below `maxLogit`, whole bins are taken from the top while
    /// their mass stays below p, and only the bin where the mass crosses p is sorted.
    /// Leaves the kept tokens (in no particular order) at the front of
    /// `candidateTokens` and returns their number.
    func topPOverWholeVocabulary(maxLogit: Float) -> Int {
        let n = vocabularySize
        let adjusted = adjustedLogits
        let tokens = candidateTokens
        let mass = bucketMass
        let lastBucket = Self.bucketCount - 1
        let lastBucketDistance = Float(lastBucket)
        mass.update(repeating: 0)

        @inline(__always) func bucket(_ logit: Float) -> Int {
            let distance = (maxLogit - logit) * Self.bucketsPerLogit
            return distance < lastBucketDistance ? Int(distance) : lastBucket
        }

        var total = 0.0
        for i in 0..<n {
            let logit = adjusted[i]
            let weight = Double(expf(logit - maxLogit))
            let b = bucket(logit)
            mass[b] += weight
            total += weight
        }
        let target = Double(parameters.topP) * total

        // The first bucket whose inclusion brings the mass to the target.
        var crossing = lastBucket
        var massAbove = 0.0
        for b in 0..<lastBucket {
            if massAbove + mass[b] >= target {
                crossing = b
                break
            }
            massAbove += mass[b]
        }

        // Crossing-bucket tokens go to the front, tokens above it to the back.
        var crossingCount = 0
        var aboveStart = n
        for i in 0..<n {
            let b = bucket(adjusted[i])
            if b == crossing {
                tokens[crossingCount] = Int32(i)
                crossingCount += 1
            } else if b < crossing {
                aboveStart -= 1
                tokens[aboveStart] = Int32(i)
            }
        }

        // Rank the crossing bucket and keep its shortest prefix that reaches the target.
        selectBest(crossingCount, among: crossingCount, wholeVocabulary: false)
        var kept = crossingCount
        var cumulative = massAbove
        for i in 0..<crossingCount {
            cumulative += Double(expf(adjusted[Int(tokens[i])] - maxLogit))
            if cumulative >= target {
                kept = i + 1
                break
            }
        }
        // Move the tokens above the crossing bucket next to them (forward copy, dest < src).
        let aboveCount = n - aboveStart
        for j in 0..<aboveCount { tokens[kept + j] = tokens[aboveStart + j] }
        return kept + aboveCount
    }

    // MARK: - Partial selection

    /// Puts the `count` best of `sourceCount` tokens at the front of `candidateTokens`,
    /// best first (higher logit first, lower id first on ties), in O(sourceCount log count):
    /// a bounded heap whose root is the worst token kept so far, then an in-place heapsort.
    /// The source is the whole vocabulary (`sourceCount == vocabularySize`) when
    /// `wholeVocabulary` is set, else `candidateTokens[0..<sourceCount]` in ascending id order.
    func selectBest(_ count: Int, among sourceCount: Int, wholeVocabulary: Bool) {
        guard count > 0 else { return }
        let adjusted = adjustedLogits
        let heap = candidateTokens
        if wholeVocabulary {
            for i in 0..<count { heap[i] = Int32(i) }
        }
        var start = count / 2 - 1
        while start >= 0 {
            siftDown(heap, from: start, size: count)
            start -= 1
        }
        // Tokens scanned from here on have larger ids than every token in the heap, so
        // on a tie they lose; only a strictly higher logit replaces the root.
        var rootLogit = adjusted[Int(heap[0])]
        if wholeVocabulary {
            for i in count..<sourceCount where adjusted[i] > rootLogit {
                heap[0] = Int32(i)
                siftDown(heap, from: 0, size: count)
                rootLogit = adjusted[Int(heap[0])]
            }
        } else {
            for i in count..<sourceCount {
                let token = heap[i]
                if adjusted[Int(token)] > rootLogit {
                    heap[0] = token
                    siftDown(heap, from: 0, size: count)
                    rootLogit = adjusted[Int(heap[0])]
                }
            }
        }
        // Heapsort: moving the worst to the back each time leaves the best at the front.
        var end = count - 1
        while end > 0 {
            heap.swapAt(0, end)
            siftDown(heap, from: 0, size: end)
            end -= 1
        }
    }

    /// True if token `a` ranks before token `b`.
    @inline(__always)
    func ranksBefore(_ a: Int32, _ b: Int32) -> Bool {
        let la = adjustedLogits[Int(a)]
        let lb = adjustedLogits[Int(b)]
        return la > lb || (la == lb && a < b)
    }

    /// Restores the heap (worst token at the root) below `index`.
    @inline(__always)
    func siftDown(_ heap: UnsafeMutableBufferPointer<Int32>, from index: Int, size: Int) {
        let adjusted = adjustedLogits
        var parent = index
        let parentToken = heap[parent]
        let parentLogit = adjusted[Int(parentToken)]
        while true {
            let left = 2 * parent + 1
            if left >= size { break }
            var worstChild = left
            var worstToken = heap[left]
            var worstLogit = adjusted[Int(worstToken)]
            let right = left + 1
            if right < size {
                let rightToken = heap[right]
                let rightLogit = adjusted[Int(rightToken)]
                // Right is worse if it has the lower logit, or the same and a larger id.
                if rightLogit < worstLogit || (rightLogit == worstLogit && rightToken > worstToken) {
                    worstChild = right
                    worstToken = rightToken
                    worstLogit = rightLogit
                }
            }
            // Stop once the parent is at least as bad as its worst child.
            if parentLogit < worstLogit || (parentLogit == worstLogit && parentToken > worstToken) { break }
            heap[parent] = worstToken
            parent = worstChild
        }
        heap[parent] = parentToken
    }
}
