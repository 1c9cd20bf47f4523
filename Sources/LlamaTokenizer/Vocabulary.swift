/// A SentencePiece ("llama") vocabulary as stored in a GGUF file: the token texts with
/// their merge scores and types, the special token ids and the two tokenizer flags.
///
/// A `Vocabulary` is validated when it is made, so a ``LlamaTokenizer`` built from it
/// cannot fail: token, score and type arrays have one entry per token, token texts are
/// unique, special ids are in range and every byte has a fallback token.
public struct Vocabulary: Sendable {
    /// The token types of `tokenizer.ggml.token_type`, with llama.cpp's numbering.
    public enum TokenType: Int32, Sendable, CaseIterable {
        case undefined = 0
        case normal = 1
        case unknown = 2
        case control = 3
        case userDefined = 4
        case unused = 5
        case byte = 6
    }

    /// Token texts, indexed by token id. SentencePiece writes a space as "▁" (U+2581).
    public let tokens: [String]
    /// Merge scores: when several adjacent pairs could merge, the pair forming the token
    /// with the highest score merges first.
    public let scores: [Float]
    /// Raw token types (see ``TokenType``); values outside 0...6 are treated as `undefined`.
    public let tokenTypes: [Int32]
    /// Beginning-of-sequence token id, or -1 if the vocabulary has none.
    public let bosID: Int32
    /// End-of-sequence token id, or -1 if the vocabulary has none.
    public let eosID: Int32
    /// Unknown-token id, or -1 if the vocabulary has none.
    public let unknownID: Int32
    /// Whether encoding with special tokens prepends `bosID`.
    public let addBOS: Bool
    /// Whether a space is put in front of the text before encoding (and removed again
    /// from the first token when decoding).
    public let addSpacePrefix: Bool

    /// The number of tokens.
    public var count: Int { tokens.count }

    /// The type of token `id`; unknown raw values read as `.undefined`.
    public func type(of id: Int32) -> TokenType {
        TokenType(rawValue: tokenTypes[Int(id)]) ?? .undefined
    }

    /// Makes and validates a vocabulary.
    ///
    /// Empty token texts are replaced by `[EMPTY_<id>]`, as llama.cpp does, so that they
    /// can never match input text.
    ///
    /// - Throws: ``VocabularyError`` if the vocabulary is empty, the arrays differ in
    ///   length, a text occurs twice, a special id is out of range, `addBOS` is set
    ///   without a BOS token, a byte-typed token is not of the form `<0xHH>`, or a byte
    ///   has neither a `<0xHH>` token nor a one-byte token to fall back on.
    public init(
        tokens: [String],
        scores: [Float],
        tokenTypes: [Int32],
        bosID: Int32 = 1,
        eosID: Int32 = 2,
        unknownID: Int32 = 0,
        addBOS: Bool = true,
        addSpacePrefix: Bool = true
    ) throws {
        guard !tokens.isEmpty else { throw VocabularyError.emptyVocabulary }
        guard scores.count == tokens.count else {
            throw VocabularyError.lengthMismatch(key: VocabularyKey.scores, count: scores.count, tokenCount: tokens.count)
        }
        guard tokenTypes.count == tokens.count else {
            throw VocabularyError.lengthMismatch(key: VocabularyKey.tokenTypes, count: tokenTypes.count, tokenCount: tokens.count)
        }

        // Texts are compared as bytes: Swift's String equality would merge canonically
        // equivalent texts such as "ί" (U+03AF) and "ί" (U+1F77), which are distinct tokens.
        var texts = tokens
        var firstID: [[UInt8]: Int] = [:]
        firstID.reserveCapacity(texts.count)
        for id in texts.indices {
            if texts[id].isEmpty { texts[id] = "[EMPTY_\(id)]" }
            if let earlier = firstID.updateValue(id, forKey: Array(texts[id].utf8)) {
                throw VocabularyError.duplicateToken(text: texts[id], firstID: earlier, secondID: id)
            }
        }

        for (key, id) in [(VocabularyKey.bosID, bosID), (VocabularyKey.eosID, eosID), (VocabularyKey.unknownID, unknownID)]
        where id != -1 && !(0..<Int32(texts.count)).contains(id) {
            throw VocabularyError.specialTokenOutOfRange(key: key, id: Int(id), vocabularySize: texts.count)
        }
        if addBOS && bosID == -1 {
            throw VocabularyError.addBOSWithoutBOSToken
        }

        for id in texts.indices where tokenTypes[id] == TokenType.byte.rawValue {
            if Vocabulary.byteValue(ofByteToken: texts[id]) == nil {
                throw VocabularyError.malformedByteToken(id: id, text: texts[id])
            }
        }
        for byte in 0...255 {
            let value = UInt8(byte)
            if firstID[Array(Vocabulary.byteTokenText(value).utf8)] == nil && firstID[Array(Vocabulary.rawByteText(value).utf8)] == nil {
                throw VocabularyError.missingByteToken(value)
            }
        }

        self.tokens = texts
        self.scores = scores
        self.tokenTypes = tokenTypes
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.addBOS = addBOS
        self.addSpacePrefix = addSpacePrefix
    }

    // MARK: - Byte tokens

    /// The text of the byte-fallback token for `byte`: `<0xHH>` with upper-case hex digits.
    static func byteTokenText(_ byte: UInt8) -> String {
        let hex: [Character] = Array("0123456789ABCDEF")
        return "<0x\(hex[Int(byte >> 4)])\(hex[Int(byte & 15)])>"
    }

    /// A token text made of `byte` alone, the fallback when there is no `<0xHH>` token.
    /// Only bytes 0x01...0x7F can be such a text (token texts are valid UTF-8, and llama.cpp
    /// looks the byte up as a C string, which NUL ends); for the others this is "", which
    /// no token has.
    static func rawByteText(_ byte: UInt8) -> String {
        byte > 0 && byte < 0x80 ? String(UnicodeScalar(byte)) : ""
    }

    /// The byte a `<0xHH>` token stands for (either hex case), or nil if `text` is not one.
    static func byteValue(ofByteToken text: String) -> UInt8? {
        let utf8 = Array(text.utf8)
        guard utf8.count == 6, utf8[0] == UInt8(ascii: "<"), utf8[1] == UInt8(ascii: "0"),
              utf8[2] == UInt8(ascii: "x"), utf8[5] == UInt8(ascii: ">"),
              let high = hexDigitValue(utf8[3]), let low = hexDigitValue(utf8[4]) else { return nil }
        return high << 4 | low
    }

    private static func hexDigitValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// The GGUF metadata keys a vocabulary is read from.
public enum VocabularyKey {
    public static let model = "tokenizer.ggml.model"
    public static let tokens = "tokenizer.ggml.tokens"
    public static let scores = "tokenizer.ggml.scores"
    public static let tokenTypes = "tokenizer.ggml.token_type"
    public static let bosID = "tokenizer.ggml.bos_token_id"
    public static let eosID = "tokenizer.ggml.eos_token_id"
    public static let unknownID = "tokenizer.ggml.unknown_token_id"
    public static let addBOS = "tokenizer.ggml.add_bos_token"
    public static let addSpacePrefix = "tokenizer.ggml.add_space_prefix"
}

/// Why a vocabulary could not be made.
public enum VocabularyError: Error, Equatable, CustomStringConvertible {
    /// A required metadata key is absent.
    case missingKey(String)
    /// A metadata key holds a value of the wrong type.
    case malformedKey(String, expected: String)
    /// `tokenizer.ggml.model` names a tokenizer other than SentencePiece ("llama").
    case unsupportedTokenizerModel(String)
    /// The token list is empty.
    case emptyVocabulary
    /// A per-token array does not have one entry per token.
    case lengthMismatch(key: String, count: Int, tokenCount: Int)
    /// Two tokens have the same text.
    case duplicateToken(text: String, firstID: Int, secondID: Int)
    /// A special token id is not a valid token id.
    case specialTokenOutOfRange(key: String, id: Int, vocabularySize: Int)
    /// `add_bos_token` is set but there is no BOS token.
    case addBOSWithoutBOSToken
    /// A token typed as a byte token does not have the text `<0xHH>`.
    case malformedByteToken(id: Int, text: String)
    /// A byte has no token to fall back on.
    case missingByteToken(UInt8)

    public var description: String {
        switch self {
        case .missingKey(let key):
            return "the vocabulary has no metadata key \(key.debugDescription)"
        case .malformedKey(let key, let expected):
            return "metadata key \(key.debugDescription) is malformed: expected \(expected)"
        case .unsupportedTokenizerModel(let name):
            return "\(VocabularyKey.model) is \(name.debugDescription); only the SentencePiece tokenizer \"llama\" is supported"
        case .emptyVocabulary:
            return "\(VocabularyKey.tokens) is empty"
        case .lengthMismatch(let key, let count, let tokenCount):
            return "\(key) has \(count) entries but \(VocabularyKey.tokens) has \(tokenCount)"
        case .duplicateToken(let text, let first, let second):
            return "token text \(text.debugDescription) occurs twice, as ids \(first) and \(second)"
        case .specialTokenOutOfRange(let key, let id, let size):
            return "\(key) is \(id), outside the vocabulary of \(size) tokens"
        case .addBOSWithoutBOSToken:
            return "\(VocabularyKey.addBOS) is true but there is no BOS token (\(VocabularyKey.bosID))"
        case .malformedByteToken(let id, let text):
            return "token \(id) is typed as a byte token but its text \(text.debugDescription) is not of the form <0xHH>"
        case .missingByteToken(let byte):
            return "the vocabulary has no byte-fallback token for byte \(Vocabulary.byteTokenText(byte))"
        }
    }
}
