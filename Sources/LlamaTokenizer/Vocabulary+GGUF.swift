import GGUF

extension Vocabulary {
    /// Reads the vocabulary of a GGUF file whose `tokenizer.ggml.model` is "llama".
    ///
    /// - Throws: ``VocabularyError`` naming the missing or malformed key (see
    ///   ``init(metadata:)``).
    public init(gguf: GGUFFile) throws {
        try self.init(metadata: gguf.metadata)
    }

    /// Reads a vocabulary from GGUF metadata.
    ///
    /// Required: `tokenizer.ggml.model` (must be "llama") and `tokenizer.ggml.tokens`.
    /// Optional, with llama.cpp's defaults: `.scores` (all 0), `.token_type` (all normal),
    /// `.bos_token_id` (1), `.eos_token_id` (2), `.unknown_token_id` (0),
    /// `.add_bos_token` (true), `.add_space_prefix` (true). A default special id that does
    /// not fit the vocabulary means "none" (-1); an explicit one that does not fit is an
    /// error. `scores` and `token_type`, when present, must have one entry per token.
    ///
    /// - Throws: ``VocabularyError``.
    public init(metadata: [String: GGUFValue]) throws {
        guard let modelValue = metadata[VocabularyKey.model] else {
            throw VocabularyError.missingKey(VocabularyKey.model)
        }
        guard let model = modelValue.string else {
            throw VocabularyError.malformedKey(VocabularyKey.model, expected: "a string")
        }
        guard model == "llama" else {
            throw VocabularyError.unsupportedTokenizerModel(model)
        }

        guard let tokensValue = metadata[VocabularyKey.tokens] else {
            throw VocabularyError.missingKey(VocabularyKey.tokens)
        }
        guard let tokens = tokensValue.stringArray else {
            throw VocabularyError.malformedKey(VocabularyKey.tokens, expected: "an array of strings")
        }
        guard !tokens.isEmpty else { throw VocabularyError.emptyVocabulary }
        let count = tokens.count

        var scores = [Float](repeating: 0, count: count)
        if let value = metadata[VocabularyKey.scores] {
            guard let array = value.array else {
                throw VocabularyError.malformedKey(VocabularyKey.scores, expected: "an array of numbers")
            }
            guard array.count == count else {
                throw VocabularyError.lengthMismatch(key: VocabularyKey.scores, count: array.count, tokenCount: count)
            }
            for (index, element) in array.enumerated() {
                guard let score = element.float else {
                    throw VocabularyError.malformedKey(VocabularyKey.scores, expected: "an array of numbers")
                }
                scores[index] = score
            }
        }

        var types = [Int32](repeating: TokenType.normal.rawValue, count: count)
        if let value = metadata[VocabularyKey.tokenTypes] {
            guard let array = value.array else {
                throw VocabularyError.malformedKey(VocabularyKey.tokenTypes, expected: "an array of integers")
            }
            guard array.count == count else {
                throw VocabularyError.lengthMismatch(key: VocabularyKey.tokenTypes, count: array.count, tokenCount: count)
            }
            for (index, element) in array.enumerated() {
                guard let type = element.int.flatMap(Int32.init(exactly:)) else {
                    throw VocabularyError.malformedKey(VocabularyKey.tokenTypes, expected: "an array of 32-bit integers")
                }
                types[index] = type
            }
        }

        func specialID(_ key: String, default defaultID: Int32) throws -> Int32 {
            guard let value = metadata[key] else {
                return defaultID < count ? defaultID : -1
            }
            guard let id = value.int else {
                throw VocabularyError.malformedKey(key, expected: "an integer token id")
            }
            guard id >= 0 && id < count else {
                throw VocabularyError.specialTokenOutOfRange(key: key, id: id, vocabularySize: count)
            }
            return Int32(id)
        }

        func flag(_ key: String, default defaultValue: Bool) throws -> Bool {
            guard let value = metadata[key] else { return defaultValue }
            guard let flag = value.bool else {
                throw VocabularyError.malformedKey(key, expected: "a boolean")
            }
            return flag
        }

        try self.init(
            tokens: tokens,
            scores: scores,
            tokenTypes: types,
            bosID: try specialID(VocabularyKey.bosID, default: 1),
            eosID: try specialID(VocabularyKey.eosID, default: 2),
            unknownID: try specialID(VocabularyKey.unknownID, default: 0),
            addBOS: try flag(VocabularyKey.addBOS, default: true),
            addSpacePrefix: try flag(VocabularyKey.addSpacePrefix, default: true)
        )
    }
}
