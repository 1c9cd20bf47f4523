#if canImport(Darwin)
import Darwin
#else
import Glibc
#endif

/// One token that survived the sampler's filters, with the probability it is drawn.
public struct SamplerCandidate: Sendable, Equatable {
    /// Token id.
    public var token: Int32
    /// Probability of drawing this token (after the temperature; all candidates add up to 1).
    public var probability: Double

    public init(token: Int32, probability: Double) {
        self.token = token
        self.probability = probability
    }
}

/// Picks the next token from a vector of logits the way llama.cpp's default sampler
/// chain does: logit bias, an optional constraint (a grammar's mask), the penalties over the
/// last `repeatLastN` tokens (repetition, presence, frequency), top-k, top-p, min-p,
/// temperature, then a draw from the softmax with a seeded xoshiro256** generator.
/// Temperature 0 picks the highest logit after bias, constraint and penalties (lowest token
/// id on ties). Each draw takes exactly one number from the generator.
///
/// All buffers are allocated once in `init`; sampling a token allocates nothing.
/// Not thread-safe: use one sampler per generated sequence.
///
/// The sampler never changes the caller's logits. Tokens enter the repetition window
/// only through ``accept(_:)`` (typically the prompt tokens, then every sampled token),
/// or are passed explicitly to ``sample(logits:history:)``.
public final class Sampler {
    /// The validated parameters this sampler runs with.
    public let parameters: SamplingParameters
    /// Number of logits expected per call.
    public let vocabularySize: Int
    /// The seed in use: ``SamplingParameters/seed`` or, if that was `nil`, the one drawn
    /// from the system, so that a run can be repeated.
    public let seed: UInt64

    private var generator: Xoshiro256StarStar

    // MARK: Preallocated buffers

    /// Logits after sanitising and the repetition penalty, indexed by token id.
    private let adjustedLogits: UnsafeMutableBufferPointer<Float>
    /// Token ids of the current candidates, in `0..<candidateCount`.
    private let candidateTokens: UnsafeMutableBufferPointer<Int32>
    /// Unnormalised drawing weight of each candidate, in `0..<candidateCount`.
    private let candidateWeights: UnsafeMutableBufferPointer<Double>
    private var candidateCount = 0
    private var candidateWeightSum = 0.0

    /// Marks tokens already seen in this penalty pass (`penaltyStamps[t] == currentStamp`).
    private let penaltyStamps: UnsafeMutableBufferPointer<UInt32>
    private var currentStamp: UInt32 = 0
    /// Occurrences of each stamped token in the penalty window.
    private let penaltyCounts: UnsafeMutableBufferPointer<UInt32>
    /// The distinct tokens of the current penalty pass.
    private let penaltyTokens: UnsafeMutableBufferPointer<Int32>
    /// Logit bias as parallel arrays (token ids already checked against the vocabulary).
    private let biasTokens: [Int]
    private let biasValues: [Float]

    /// Per-bucket probability mass for top-p over the whole vocabulary.
    private let bucketMass: UnsafeMutableBufferPointer<Double>

    /// Ring buffer of the last `repeatLastN` accepted tokens.
    private let recentRing: UnsafeMutableBufferPointer<Int32>
    private var recentCount = 0
    private var recentNextSlot = 0

    /// Creates a sampler for a vocabulary of `vocabularySize` tokens.
    /// - Throws: ``SamplingError/invalid(parameter:reason:)`` if a parameter is out of
    ///   range or `vocabularySize` is not in `1...Int32.max`.
    public init(parameters: SamplingParameters, vocabularySize: Int) throws {
        self.parameters = try parameters.validated()
        guard vocabularySize > 0, vocabularySize <= Int(Int32.max) else {
            throw SamplingError.invalid(
                parameter: "vocabularySize",
                reason: "must be in 1...\(Int32.max), got \(vocabularySize)")
        }
        self.vocabularySize = vocabularySize
        let seed = parameters.seed ?? UInt64.random(in: .min ... .max)
        self.seed = seed
        generator = Xoshiro256StarStar(seed: seed)

        adjustedLogits = .allocate(capacity: vocabularySize)
        candidateTokens = .allocate(capacity: vocabularySize)
        candidateWeights = .allocate(capacity: vocabularySize)
        penaltyStamps = .allocate(capacity: vocabularySize)
        penaltyStamps.initialize(repeating: 0)
        penaltyCounts = .allocate(capacity: vocabularySize)
        penaltyCounts.initialize(repeating: 0)
        penaltyTokens = .allocate(capacity: max(parameters.repeatLastN, 1))
        let bias = parameters.logitBias.sorted { $0.key < $1.key }
        if let bad = bias.first(where: { Int($0.key) >= vocabularySize }) {
            throw SamplingError.invalid(parameter: "logitBias",
                                        reason: "token id \(bad.key) is outside the vocabulary of \(vocabularySize)")
        }
        biasTokens = bias.map { Int($0.key) }
        biasValues = bias.map(\.value)
        recentRing = .allocate(capacity: max(parameters.repeatLastN, 1))
        bucketMass = .allocate(capacity: Self.bucketCount)
    }

    deinit {
        adjustedLogits.deallocate()
        candidateTokens.deallocate()
        candidateWeights.deallocate()
        penaltyStamps.deallocate()
        penaltyCounts.deallocate()
        penaltyTokens.deallocate()
        recentRing.deallocate()
        bucketMass.deallocate()
    }

    // MARK: - Token window

    /// Appends `token` to the window the repetition penalty looks at (the last
    /// ``SamplingParameters/repeatLastN`` accepted tokens).
    public func accept(_ token: Int32) {
        precondition(token >= 0 && Int(token) < vocabularySize,
                     "token \(token) outside vocabulary of \(vocabularySize)")
        let capacity = parameters.repeatLastN
        guard capacity > 0 else { return }
        recentRing[recentNextSlot] = token
        recentNextSlot = recentNextSlot + 1 == capacity ? 0 : recentNextSlot + 1
        recentCount = min(recentCount + 1, capacity)
    }

    /// Appends every token of `tokens`, in order (for instance the prompt).
    public func accept(contentsOf tokens: some Sequence<Int32>) {
        for token in tokens { accept(token) }
    }

    /// The tokens currently in the repetition window, oldest first.
    public var recentTokens: [Int32] {
        let capacity = parameters.repeatLastN
        guard recentCount > 0 else { return [] }
        let start = (recentNextSlot - recentCount + capacity) % capacity
        return (0..<recentCount).map { recentRing[(start + $0) % capacity] }
    }

    /// Empties the token window and restarts the random sequence from ``seed``.
    public func reset() {
        recentCount = 0
        recentNextSlot = 0
        generator = Xoshiro256StarStar(seed: seed)
    }

    // MARK: - Sampling

    /// Draws the next token, penalising the tokens given to ``accept(_:)``.
    /// `logits.count` must equal ``vocabularySize``. Does not accept the drawn token.
    ///
    /// `constrain`, when given, sees the biased logits (indexed by token id) before the
    /// penalties and may set any of them to -infinity (a grammar's mask).
    public func sample(logits: UnsafeBufferPointer<Float>,
                       constrain: ((UnsafeMutableBufferPointer<Float>) -> Void)? = nil) -> Int32 {
        prepareLogits(logits)
        applyBias()
        constrain?(adjustedLogits)
        applyPenaltyToRecentWindow()
        return chooseToken()
    }

    /// Draws the next token, penalising the last ``SamplingParameters/repeatLastN``
    /// tokens of `history` instead of the accepted window.
    public func sample(logits: UnsafeBufferPointer<Float>, history: some Collection<Int32>) -> Int32 {
        prepareLogits(logits)
        applyBias()
        applyPenalty(to: history.suffix(parameters.repeatLastN))
        return chooseToken()
    }

    /// Same as the `UnsafeBufferPointer` form; the logits are left unchanged.
    public func sample(logits: UnsafeMutableBufferPointer<Float>) -> Int32 {
        sample(logits: UnsafeBufferPointer(logits))
    }

    /// Same as the `UnsafeBufferPointer` form with history; the logits are left unchanged.
    public func sample(logits: UnsafeMutableBufferPointer<Float>, history: some Collection<Int32>) -> Int32 {
        sample(logits: UnsafeBufferPointer(logits), history: history)
    }

    /// Convenience for an array of logits.
    public func sample(logits: [Float]) -> Int32 {
        logits.withUnsafeBufferPointer { sample(logits: $0) }
    }

    /// Convenience for an array of logits with an explicit history.
    public func sample(logits: [Float], history: some Collection<Int32>) -> Int32 {
        logits.withUnsafeBufferPointer { sample(logits: $0, history: history) }
    }

    /// The tokens that could be drawn from `logits` with the accepted window, and their
    /// probabilities, best first (lower id first on ties). Does not advance the random
    /// generator. Allocates the result; meant for inspection and tests.
    public func candidates(logits: [Float]) -> [SamplerCandidate] {
        logits.withUnsafeBufferPointer { prepareLogits($0) }
        applyBias()
        applyPenaltyToRecentWindow()
        return collectCandidates()
    }

    /// As ``candidates(logits:)`` but penalising the last tokens of `history`.
    public func candidates(logits: [Float], history: some Collection<Int32>) -> [SamplerCandidate] {
        logits.withUnsafeBufferPointer { prepareLogits($0) }
        applyBias()
        applyPenalty(to: history.suffix(parameters.repeatLastN))
        return collectCandidates()
    }

    // MARK: - Chain stages

    /// Copies the logits, turning NaN into -inf and +inf into the largest finite value
    /// so the softmax stays defined.
    private func prepareLogits(_ logits: UnsafeBufferPointer<Float>) {
        precondition(logits.count == vocabularySize,
                     "got \(logits.count) logits for a vocabulary of \(vocabularySize)")
        let adjusted = adjustedLogits
        for i in 0..<vocabularySize {
            let value = logits[i]
            // NaN fails both comparisons and becomes -inf.
            adjusted[i] = value < .infinity
                ? (value >= -.infinity ? value : -.infinity)
                : (value == .infinity ? .greatestFiniteMagnitude : -.infinity)
        }
    }

    private func applyBias() {
        for (i, token) in biasTokens.enumerated() { adjustedLogits[token] += biasValues[i] }
    }

    private var penaltyIsActive: Bool {
        (parameters.repeatPenalty != 1 || parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0)
            && parameters.repeatLastN > 0
    }

    private func applyPenaltyToRecentWindow() {
        guard penaltyIsActive, recentCount > 0 else { return }
        beginPenaltyPass()
        var distinct = 0
        for slot in 0..<recentCount { count(recentRing[slot], distinct: &distinct) }
        penaliseCounted(distinct)
    }

    private func applyPenalty(to window: some Collection<Int32>) {
        guard penaltyIsActive else { return }
        beginPenaltyPass()
        var distinct = 0
        for token in window {
            precondition(token >= 0 && Int(token) < vocabularySize,
                         "history token \(token) outside vocabulary of \(vocabularySize)")
            count(token, distinct: &distinct)
        }
        penaliseCounted(distinct)
    }

    private func beginPenaltyPass() {
        currentStamp &+= 1
        if currentStamp == 0 {
            penaltyStamps.update(repeating: 0)
            currentStamp = 1
        }
    }

    /// Counts one occurrence of `token` in the window of this pass.
    @inline(__always)
    private func count(_ token: Int32, distinct: inout Int) {
        let index = Int(token)
        if penaltyStamps[index] != currentStamp {
            penaltyStamps[index] = currentStamp
            penaltyCounts[index] = 1
            penaltyTokens[distinct] = token
            distinct += 1
        } else {
            penaltyCounts[index] += 1
        }
    }

    /// Applies the repetition penalty once per distinct token of the window, the presence
    /// penalty once and the frequency penalty once per occurrence (OpenAI's definitions).
    private func penaliseCounted(_ distinct: Int) {
        let repeatPenalty = parameters.repeatPenalty
        let presence = parameters.presencePenalty, frequency = parameters.frequencyPenalty
        for i in 0..<distinct {
            let index = Int(penaltyTokens[i])
            var logit = adjustedLogits[index]
            if repeatPenalty != 1 { logit = logit > 0 ? logit / repeatPenalty : logit * repeatPenalty }
            logit -= presence + frequency * Float(penaltyCounts[index])
            adjustedLogits[index] = logit
        }
    }

    /// Highest adjusted logit, lowest id on ties.
    private func argmaxToken() -> Int32 {
        let adjusted = adjustedLogits
        var best = 0
        var bestLogit = adjusted[0]
        for i in 1..<vocabularySize where adjusted[i] > bestLogit {
            best = i
            bestLogit = adjusted[i]
        }
        return Int32(best)
    }

    private func chooseToken() -> Int32 {
        if parameters.temperature == 0 { return argmaxToken() }
        filterCandidates()
        let tokens = candidateTokens
        let weights = candidateWeights
        let target = generator.nextUnitDouble() * candidateWeightSum
        var cumulative = 0.0
        for i in 0..<candidateCount {
            cumulative += weights[i]
            if target < cumulative { return tokens[i] }
        }
        return tokens[candidateCount - 1]
    }

    private func collectCandidates() -> [SamplerCandidate] {
        if parameters.temperature == 0 {
            return [SamplerCandidate(token: argmaxToken(), probability: 1)]
        }
        filterCandidates()
        return (0..<candidateCount)
            .map { (token: candidateTokens[$0], weight: candidateWeights[$0]) }
            .sorted { ranksBefore($0.token, $1.token) }
            .map { SamplerCandidate(token: $0.token, probability: $0.weight / candidateWeightSum) }
    }

    /// Runs top-k, top-p, min-p and temperature over `adjustedLogits`, leaving the
    /// survivors in `candidateTokens[0..<candidateCount]` and their weights in
    /// `candidateWeights` (summing to `candidateWeightSum`).
    private func filterCandidates() {
        let n = vocabularySize
        let adjusted = adjustedLogits
        let tokens = candidateTokens
        var count: Int
        var isSorted: Bool
        var maxLogit: Float = -.infinity

        // Top-k.
        if parameters.topK > 0 && parameters.topK < n {
            count = parameters.topK
            selectBest(count, among: n, wholeVocabulary: true)
            maxLogit = adjusted[Int(tokens[0])]
            isSorted = true
        } else {
            for i in 0..<n {
                tokens[i] = Int32(i)
                maxLogit = max(maxLogit, adjusted[i])
            }
            count = n
            isSorted = false
        }

        // Every logit is -inf: nothing is more likely than anything else.
        if maxLogit == -.infinity {
            tokens[0] = argmaxToken()
            candidateWeights[0] = 1
            candidateCount = 1
            candidateWeightSum = 1
            return
        }

        // Top-p, on the softmax at temperature 1 of the current candidates.
        if parameters.topP < 1 {
            if isSorted {
                var total = 0.0
                for i in 0..<count {
                    total += Double(expf(adjusted[Int(tokens[i])] - maxLogit))
                }
                let target = Double(parameters.topP) * total
                var cumulative = 0.0
                for i in 0..<count {
                    cumulative += Double(expf(adjusted[Int(tokens[i])] - maxLogit))
                    if cumulative >= target {
                        count = i + 1
                        break
                    }
                }
            } else {
                count = topPOverWholeVocabulary(maxLogit: maxLogit)
            }
        }

        // Min-p: p_i >= minP * p_max  <=>  logit_i >= maxLogit + log(minP).
        if parameters.minP > 0 {
            let threshold = maxLogit + logf(parameters.minP)
            if isSorted {
                var keep = 1
                while keep < count && adjusted[Int(tokens[keep])] >= threshold { keep += 1 }
                count = keep
            } else {
                var kept = 0
                for i in 0..<count {
                    let token = tokens[i]
                    if adjusted[Int(token)] >= threshold {
                        tokens[kept] = token
                        kept += 1
                    }
                }
                count = kept
            }
        }

        // Temperature and softmax weights.
        let weights = candidateWeights
        let inverseTemperature = 1 / parameters.temperature
        var sum = 0.0
        for i in 0..<count {
            let scaled = (adjusted[Int(tokens[i])] - maxLogit) * inverseTemperature
            let weight = Double(expf(scaled))
            weights[i] = weight
            sum += weight
        }
        candidateCount = count
        candidateWeightSum = sum
    }

    // MARK: - Top-p without a top-k bound

    /// Number of logit buckets below the maximum, and their width (1/32 logit);
    /// everything more than 16 below the maximum shares the last bucket.
    private static let bucketCount = 512
    private static let bucketsPerLogit: Float = 32

    /// Top-p over all `vocabularySize` tokens without sorting them: the tokens are
    /// binned by distance below `maxLogit`, whole bins are taken from the top while
    /// their mass stays below p, and only the bin where the mass crosses p is sorted.
    /// Leaves the kept tokens (in no particular order) at the front of
    /// `candidateTokens` and returns their number.
    private func topPOverWholeVocabulary(maxLogit: Float) -> Int {
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
    private func selectBest(_ count: Int, among sourceCount: Int, wholeVocabulary: Bool) {
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
    private func ranksBefore(_ a: Int32, _ b: Int32) -> Bool {
        let la = adjustedLogits[Int(a)]
        let lb = adjustedLogits[Int(b)]
        return la > lb || (la == lb && a < b)
    }

    /// Restores the heap (worst token at the root) below `index`.
    @inline(__always)
    private func siftDown(_ heap: UnsafeMutableBufferPointer<Int32>, from index: Int, size: Int) {
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
