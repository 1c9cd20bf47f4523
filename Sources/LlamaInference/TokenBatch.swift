import LlamaTokenizer

/// One frame of work for the pipeline: cache operations to apply first, then tokens, each
/// with its sequence (KV-cache slot) and position.
public struct TokenBatch: Sendable, Equatable {
    public var id: UInt64
    /// Applied on every stage, in order, before the tokens.
    public var copies: [CacheCopy]
    public var tokens: [Int32]
    public var sequenceIDs: [Int32]
    public var positions: [Int32]
    /// Rows whose logits come back (in row order).
    public var needLogits: [Bool]

    public init(id: UInt64, copies: [CacheCopy] = [], tokens: [Int32] = [], sequenceIDs: [Int32] = [],
                positions: [Int32] = [], needLogits: [Bool] = []) {
        self.id = id
        self.copies = copies
        self.tokens = tokens
        self.sequenceIDs = sequenceIDs
        self.positions = positions
        self.needLogits = needLogits
    }

    public var tokenCount: Int { tokens.count }
    public var logitsRowCount: Int { needLogits.reduce(0) { $0 + ($1 ? 1 : 0) } }
}

/// Copy the keys and values of positions `0..<count` of slot `source` into slot
/// `destination` (the prompt of a request with several choices, computed once).
public struct CacheCopy: Sendable, Equatable {
    public var source: Int32
    public var destination: Int32
    public var count: Int32

    public init(source: Int32, destination: Int32, count: Int32) {
        self.source = source
        self.destination = destination
        self.count = count
    }
}

/// Speculative decoding: drafted tokens are checked by the model in one frame. Drafts come
/// from prompt lookup (the tokens that followed the last earlier occurrence of the
/// sequence's final `ngram` tokens; 0: off) and, when that finds nothing and `draftModel`
/// is set, from a small model with the same vocabulary (``ModelDrafter``); at most
/// `maxDraft` tokens at once.
public struct SpeculativeSettings: Sendable, Equatable {
    public var ngram: Int
    public var maxDraft: Int
    /// A draft GGUF run on the scheduler's host (nil: prompt lookup only).
    public var draftModel: String?
    /// The draft model stops drafting when its own probability of a token is below this.
    public var draftMinProbability: Float

    public init(ngram: Int = 3, maxDraft: Int = 8, draftModel: String? = nil, draftMinProbability: Float = 0.75) {
        self.ngram = ngram
        self.maxDraft = maxDraft
        self.draftModel = draftModel
        self.draftMinProbability = draftMinProbability
    }

    /// Opens the draft model, if any, for `slots` sequences of `contextLength` positions.
    public func makeDrafter(target: Vocabulary, slots: Int, contextLength: Int) throws -> ModelDrafter? {
        try draftModel.map {
            try ModelDrafter(path: $0, target: target, slots: slots, contextLength: contextLength,
                             minProbability: draftMinProbability)
        }
    }

    /// Up to `maxDraft` tokens continuing `tokens` by its own history, or none.
    public func draft(_ tokens: [Int32], limit: Int) -> [Int32] {
        let n = ngram, count = tokens.count
        let most = min(maxDraft, limit)
        guard n > 0, most > 0, count > n else { return [] }
        // The latest earlier occurrence of the last n tokens.
        var start = count - n - 1
        while start >= 0 {
            var match = true
            for j in 0..<n where tokens[start + j] != tokens[count - n + j] {
                match = false
                break
            }
            if match {
                let from = start + n
                return Array(tokens[from..<min(from + most, count)])
            }
            start -= 1
        }
        return []
    }
}
