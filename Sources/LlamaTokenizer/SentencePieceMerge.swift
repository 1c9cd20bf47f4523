// The merge step of the SentencePiece byte-pair tokenizer, as llama.cpp runs it for
// "llama" vocabularies: split the text into UTF-8 characters, then keep merging the
// adjacent pair whose concatenation is the highest-scoring token (ties: the leftmost
// pair) until no adjacent pair forms a token. Symbols form a doubly linked list over the
// text; candidate pairs wait in a max-heap keyed by (score, -position). A pair whose
// symbols changed after it was queued is recognised by its stale length and skipped.

/// One symbol of the text being merged: `length` bytes at `start`, linked to its
/// neighbours by index (-1 at either end). A symbol merged into its left neighbour has
/// length 0.
struct MergeSymbol {
    var start: Int32
    var length: Int32
    var prev: Int32
    var next: Int32
}

/// Two adjacent symbols whose concatenation (of `length` bytes) is a token of `score`.
struct MergeCandidate {
    var left: Int32
    var right: Int32
    var score: Float
    var length: Int32

    /// Whether `self` is merged before `other`: higher score first, then the leftmost.
    @inline(__always)
    func precedes(_ other: MergeCandidate) -> Bool {
        score > other.score || (score == other.score && left < other.left)
    }
}

/// Byte length of a UTF-8 sequence by the high nibble of its first byte; a continuation
/// or invalid byte counts as a character of its own, as in llama.cpp.
private let utf8SequenceLength: [Int32] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4]

extension LlamaTokenizer {
    /// Tokenizes one whitespace-escaped fragment and appends its token ids to `output`.
    ///
    /// Allocates the symbol list and the heap once for the fragment; the merge loop
    /// itself allocates nothing.
    func mergeFragment(_ text: UnsafeBufferPointer<UInt8>, scores: UnsafeBufferPointer<Float>, into output: inout [Int32]) {
        guard let base = text.baseAddress, text.count > 0 else { return }
        let byteCount = text.count
        precondition(byteCount < Int(Int32.max), "text too long to tokenize")

        // MARK: Split into characters

        let symbols = UnsafeMutablePointer<MergeSymbol>.allocate(capacity: byteCount)
        defer { symbols.deallocate() }
        var symbolCount: Int32 = 0
        var offset: Int32 = 0
        let end = Int32(byteCount)
        while offset < end {
            let length = min(utf8SequenceLength[Int(base[Int(offset)] >> 4)], end - offset)
            symbols[Int(symbolCount)] = MergeSymbol(
                start: offset, length: length, prev: symbolCount - 1,
                next: offset + length == end ? -1 : symbolCount + 1)
            offset += length
            symbolCount += 1
        }

        // MARK: Candidate heap

        // Every merge pops one candidate and pushes at most two, and there are fewer merges
        // than symbols, so the heap never holds more than 2 * symbolCount candidates.
        let heapCapacity = 2 * Int(symbolCount) + 2
        let heap = UnsafeMutablePointer<MergeCandidate>.allocate(capacity: heapCapacity)
        defer { heap.deallocate() }
        var heapCount = 0

        func push(_ candidate: MergeCandidate) {
            var child = heapCount
            heapCount += 1
            while child > 0 {
                let parent = (child - 1) >> 1
                if !candidate.precedes(heap[parent]) { break }
                heap[child] = heap[parent]
                child = parent
            }
            heap[child] = candidate
        }

        func popFirst() -> MergeCandidate {
            let first = heap[0]
            heapCount -= 1
            if heapCount > 0 {
                let last = heap[heapCount]
                var parent = 0
                while true {
                    var child = 2 * parent + 1
                    if child >= heapCount { break }
                    if child + 1 < heapCount && heap[child + 1].precedes(heap[child]) { child += 1 }
                    if !heap[child].precedes(last) { break }
                    heap[parent] = heap[child]
                    parent = child
                }
                heap[parent] = last
            }
            return first
        }

        let table = self.table
        func considerPair(_ left: Int32, _ right: Int32) {
            if left < 0 || right < 0 { return }
            let length = symbols[Int(left)].length + symbols[Int(right)].length
            let id = table.lookup(base + Int(symbols[Int(left)].start), Int(length))
            if id < 0 { return }
            push(MergeCandidate(left: left, right: right, score: scores[Int(id)], length: length))
        }

        // MARK: Merge

        var index: Int32 = 1
        while index < symbolCount {
            considerPair(index - 1, index)
            index += 1
        }

        while heapCount > 0 {
            let candidate = popFirst()
            let leftLength = symbols[Int(candidate.left)].length
            let rightLength = symbols[Int(candidate.right)].length
            if leftLength == 0 || rightLength == 0 || leftLength + rightLength != candidate.length {
                continue
            }
            symbols[Int(candidate.left)].length = candidate.length
            symbols[Int(candidate.right)].length = 0
            let next = symbols[Int(candidate.right)].next
            symbols[Int(candidate.left)].next = next
            if next >= 0 { symbols[Int(next)].prev = candidate.left }
            considerPair(symbols[Int(candidate.left)].prev, candidate.left)
            considerPair(candidate.left, next)
        }

        // MARK: Emit tokens, falling back to bytes

        var symbol: Int32 = 0
        while symbol != -1 {
            let start = Int(symbols[Int(symbol)].start)
            let length = Int(symbols[Int(symbol)].length)
            let id = table.lookup(base + start, length)
            if id >= 0 {
                output.append(id)
            } else {
                for i in start..<(start + length) {
                    output.append(byteTokens[Int(base[i])])
                }
            }
            symbol = symbols[Int(symbol)].next
        }
    }
}
