// MARK: - Matcher

/// One sequence's position in a grammar, for constrained sampling: `mask(logits:)`
/// before sampling, `accept(_:)` after.
///
/// **Value semantics.** Copying a matcher forks its position: the copy and the original
/// advance independently (for `n > 1` choices, or to roll back rejected speculative
/// tokens keep a copy and assign it back). Copies share an internal memo of the parse
/// states and byte transitions explored so far, which only makes them faster; it is
/// guarded by a lock, so matchers (and their copies) may be used from any threads. When
/// the memo grows past `memoStateLimit` states, the matcher that notices starts a fresh
/// one holding only its own state (the others keep the old one).
///
/// Tokens with an empty piece and control tokens are never allowed; the end-of-text token
/// is allowed exactly when `canEnd`. Once end-of-text has been accepted nothing is.
public struct GrammarMatcher: Sendable {
    /// The grammar.
    public let grammar: Grammar
    /// The vocabulary.
    public let vocabulary: GrammarVocabulary
    private var automaton: GrammarAutomaton
    private var state: Int32
    private var ended = false

    /// The number of memo states (one kilobyte each) past which a matcher starts a fresh memo.
    public static let memoStateLimit = 8192

    /// A matcher at the start of the text.
    ///
    /// - Parameter rememberedMasks: how many of the most recent masks (one bit a token, for
    ///   one parse state each) are kept for reuse when a state recurs, as it does at every
    ///   token inside a long string; 0 makes every `mask` walk the vocabulary's trie.
    public init(grammar: Grammar, vocabulary: GrammarVocabulary, rememberedMasks: Int = 16) {
        self.grammar = grammar
        self.vocabulary = vocabulary
        let automaton = GrammarAutomaton(program: grammar.program)
        automaton.maskBuffers.remembered = max(rememberedMasks, 0)
        self.automaton = automaton
        state = automaton.lock.withLock { automaton.initialState() }
    }

    // MARK: - Masking

    /// Sets to minus infinity the logit of every token whose bytes cannot continue a valid
    /// parse (and of every index at or past the vocabulary's size). End-of-text stays
    /// allowed only when the text so far is a complete sentence; control tokens and tokens
    /// with empty pieces are never allowed. Allocates nothing in steady state.
    public mutating func mask(logits: UnsafeMutableBufferPointer<Float>) {
        renewMemoIfLarge()
        let vocabulary = self.vocabulary
        let state = self.state
        let ended = self.ended
        automaton.lock.withLock {
            if ended {
                for index in logits.indices { logits[index] = -.infinity }
                return
            }
            let bits = automaton.allowedTokenBits(from: state, vocabulary: vocabulary)
            automaton.applyMask(bits, to: logits, vocabularySize: vocabulary.count)
        }
    }

    /// Every token allowed next, in increasing order (the tokens `mask` leaves alone).
    public func allowedTokens() -> [Int32] {
        guard !ended else { return [] }
        let vocabulary = self.vocabulary
        let state = self.state
        return automaton.lock.withLock {
            let bits = automaton.allowedTokenBits(from: state, vocabulary: vocabulary)
            return (0..<vocabulary.count).filter { bits[$0 >> 6] & (1 << UInt64($0 & 63)) != 0 }.map(Int32.init)
        }
    }

    // MARK: - Advancing

    /// Whether `token` may come next (the same rule as `mask`). Not `mutating`: the memo
    /// it may extend is internal.
    public func allows(_ token: Int32) -> Bool {
        nextState(after: token) != nil
    }

    /// Advances by `token`.
    ///
    /// - Throws: `GrammarError` of kind `.notAllowed` if the token cannot come next; the
    ///   matcher is then unchanged.
    public mutating func accept(_ token: Int32) throws {
        renewMemoIfLarge()
        guard let next = nextState(after: token) else {
            throw GrammarError(.notAllowed, "token \(token) is not allowed by the grammar here")
        }
        if token == vocabulary.endOfText {
            ended = true
        } else {
            state = next
        }
    }

    /// Advances by raw bytes (for text that is already part of the output, such as a
    /// prefix the caller forces).
    ///
    /// - Throws: `GrammarError` of kind `.notAllowed` if the bytes cannot continue the
    ///   text; the matcher is then unchanged.
    public mutating func accept(bytes: [UInt8]) throws {
        renewMemoIfLarge()
        guard let next = nextState(after: bytes) else {
            throw GrammarError(.notAllowed, "the bytes cannot continue the text under the grammar")
        }
        state = next
    }

    /// Advances by the UTF-8 bytes of `text`.
    public mutating func accept(text: String) throws {
        try accept(bytes: Array(text.utf8))
    }

    /// Whether `bytes` may come next.
    public func allows(bytes: [UInt8]) -> Bool {
        nextState(after: bytes) != nil
    }

    // MARK: - Where the text stands

    /// The text so far is a complete sentence of the grammar (end-of-text is allowed).
    public var canEnd: Bool {
        !ended && automaton.lock.withLock { automaton.flags(of: state) } & GrammarAutomaton.canEndFlag != 0
    }

    /// Nothing more can follow: the only allowed token is end-of-text (or, after it has
    /// been accepted, none).
    public var isFinished: Bool {
        ended || automaton.lock.withLock { automaton.flags(of: state) } & GrammarAutomaton.finishedFlag != 0
    }

    /// End-of-text has been accepted.
    public var hasEnded: Bool { ended }

    // MARK: - Internals

    private func nextState(after token: Int32) -> Int32? {
        guard !ended, token >= 0, Int(token) < vocabulary.count else { return nil }
        if token == vocabulary.endOfText {
            return canEnd ? state : nil
        }
        guard !vocabulary.excluded[Int(token)] else { return nil }
        return nextState(after: vocabulary.pieces[Int(token)])
    }

    private func nextState(after bytes: [UInt8]) -> Int32? {
        guard !ended else { return nil }
        let next = automaton.lock.withLock { automaton.run(state, bytes) }
        return next >= 0 ? next : nil
    }

    private mutating func renewMemoIfLarge() {
        let (states, frames) = automaton.lock.withLock { (automaton.stateCount, automaton.frameCount) }
        guard states > GrammarMatcher.memoStateLimit || frames > 64 * GrammarMatcher.memoStateLimit else { return }
        let fresh = GrammarAutomaton(program: grammar.program)
        fresh.maskBuffers.remembered = automaton.lock.withLock { automaton.maskBuffers.remembered }
        state = automaton.lock.withLock { automaton.transplant(state, into: fresh) }
        automaton = fresh
    }
}
