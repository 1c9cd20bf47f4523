// MARK: - Masking: walking the token trie through the automaton

/// Buffers of the mask walk, owned by one automaton (freed by `release`): bitsets of
/// allowed tokens for the last few states masked (states recur often, e.g. inside a
/// long string), and the per-depth states of the walk.
struct MaskBuffers {
    /// How many states' bitsets are remembered (0: none, every mask walks the trie).
    var remembered = 16
    var slots: Int { max(remembered, 1) }

    var words = 0
    /// `slots` bitsets of `words` words each; bit `t` set: token `t` is allowed.
    var bits: UnsafeMutablePointer<UInt64>? = nil
    /// The state of each slot (-1: none).
    var slotStates: [Int32] = []
    var nextSlot = 0
    /// `levels[d]`: the state after the first `d` bytes of the current trie path.
    var levels: UnsafeMutablePointer<Int32>? = nil
    var levelCount = 0

    mutating func prepare(tokens: Int, depth: Int) {
        let needed = (tokens + 63) / 64
        if words < needed {
            bits?.deallocate()
            bits = .allocate(capacity: needed * slots)
            words = needed
            slotStates = [Int32](repeating: -1, count: slots)
        }
        if levelCount < depth + 1 {
            levels?.deallocate()
            levels = .allocate(capacity: depth + 1)
            levelCount = depth + 1
        }
    }

    func release() {
        bits?.deallocate()
        levels?.deallocate()
    }
}

extension GrammarAutomaton {
    /// The bitset of the tokens that can follow `state` (valid until the next call).
    ///
    /// Computed by a depth-first walk of the trie that follows each byte's transition and
    /// skips the whole subtree under a byte that leads nowhere; end-of-text is allowed
    /// when the state can end. The last few results are remembered.
    func allowedTokenBits(from state: Int32, vocabulary: GrammarVocabulary) -> UnsafeMutablePointer<UInt64> {
        let trie = vocabulary.trie
        maskBuffers.prepare(tokens: vocabulary.count, depth: trie.maxDepth)
        let words = maskBuffers.words
        if maskBuffers.remembered > 0, let slot = maskBuffers.slotStates.firstIndex(of: state) {
            return maskBuffers.bits! + slot * words
        }
        let slot = maskBuffers.nextSlot
        maskBuffers.nextSlot = (slot + 1) % maskBuffers.slots
        maskBuffers.slotStates[slot] = state
        let bits = maskBuffers.bits! + slot * words
        bits.update(repeating: 0, count: words)
        let levels = maskBuffers.levels!
        levels[0] = state
        trie.nodes.withUnsafeBufferPointer { nodes in
            trie.tokens.withUnsafeBufferPointer { tokens in
                var table = transitions
                let count = nodes.count - 1
                var index = 0
                while index < count {
                    let node = nodes[index]
                    let from = levels[Int(node.depth) &- 1]
                    var next = table[Int(from) &* 256 &+ Int(node.byte)]
                    if next == GrammarAutomaton.unknown {
                        next = computeTransition(from, node.byte)
                        table = transitions
                    }
                    if next < 0 {
                        index = Int(node.skip)
                        continue
                    }
                    levels[Int(node.depth)] = next
                    var position = Int(node.tokenStart)
                    let end = Int(nodes[index &+ 1].tokenStart)
                    while position < end {
                        let token = Int(tokens[position])
                        bits[token &>> 6] |= 1 &<< UInt64(token & 63)
                        position &+= 1
                    }
                    index &+= 1
                }
            }
        }
        let end = Int(vocabulary.endOfText)
        if flags(of: state) & GrammarAutomaton.canEndFlag != 0, end >= 0, end < vocabulary.count {
            bits[end >> 6] |= 1 << UInt64(end & 63)
        }
        return bits
    }

    /// Sets to minus infinity every logit whose bit is clear (and every logit past the end
    /// of the vocabulary).
    func applyMask(_ bits: UnsafeMutablePointer<UInt64>, to logits: UnsafeMutableBufferPointer<Float>,
                   vocabularySize: Int) {
        let known = min(logits.count, vocabularySize)
        var word = 0
        while word * 64 < known {
            let value = bits[word]
            let base = word * 64
            let width = min(64, known - base)
            if value == 0 {
                for offset in 0..<width { logits[base &+ offset] = -.infinity }
            } else if value != ~0 {
                for bit in 0..<width where value & (1 << UInt64(bit)) == 0 {
                    logits[base &+ bit] = -.infinity
                }
            }
            word += 1
        }
        for token in known..<logits.count {
            logits[token] = -.infinity
        }
    }

    /// The state after `bytes`, or `dead`.
    func run(_ state: Int32, _ bytes: [UInt8]) -> Int32 {
        var current = state
        for byte in bytes {
            current = transition(current, byte)
            if current < 0 { return GrammarAutomaton.dead }
        }
        return current
    }
}
