import TestSupport
import Foundation
import GGUF
import LlamaTokenizer
import Testing

@Suite("Reading and validating vocabularies")
struct VocabularyErrorTests {
    /// Metadata of a small valid vocabulary: <unk>, <s>, </s>, 256 byte tokens, "▁", "a".
    static func validMetadata() -> [String: GGUFValue] {
        var tokens = ["<unk>", "<s>", "</s>"]
        var types: [Int32] = [2, 3, 3]
        for byte in 0...255 {
            tokens.append("<0x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true) + ">")
            types.append(6)
        }
        tokens += ["▁", "a"]
        types += [1, 1]
        return [
            VocabularyKey.model: .string("llama"),
            VocabularyKey.tokens: .array(elementType: .string, tokens.map { .string($0) }),
            VocabularyKey.scores: .array(elementType: .float32, tokens.indices.map { .float32(-Float($0)) }),
            VocabularyKey.tokenTypes: .array(elementType: .int32, types.map { .int32($0) }),
            VocabularyKey.bosID: .uint32(1),
            VocabularyKey.eosID: .uint32(2),
            VocabularyKey.unknownID: .uint32(0),
            VocabularyKey.addBOS: .bool(true),
        ]
    }

    static func changed(_ key: String, to value: GGUFValue?) -> [String: GGUFValue] {
        var metadata = validMetadata()
        metadata[key] = value
        return metadata
    }

    /// Valid metadata with the token texts and types edited.
    static func edited(_ edit: (inout [String], inout [Int32]) -> Void) -> [String: GGUFValue] {
        var metadata = validMetadata()
        var tokens = metadata[VocabularyKey.tokens]!.stringArray!
        var types = metadata[VocabularyKey.tokenTypes]!.intArray!.map { Int32($0) }
        edit(&tokens, &types)
        metadata[VocabularyKey.tokens] = .array(elementType: .string, tokens.map { .string($0) })
        metadata[VocabularyKey.tokenTypes] = .array(elementType: .int32, types.map { .int32($0) })
        return metadata
    }

    @Test("valid metadata loads, and absent optional keys take llama.cpp's defaults")
    func defaults() throws {
        let full = try Vocabulary(metadata: Self.validMetadata())
        #expect(full.count == 261 && full.bosID == 1 && full.addBOS && full.addSpacePrefix)
        var minimal = Self.validMetadata()
        for key in [VocabularyKey.scores, VocabularyKey.tokenTypes, VocabularyKey.bosID, VocabularyKey.eosID,
                    VocabularyKey.unknownID, VocabularyKey.addBOS] {
            minimal[key] = nil
        }
        let vocabulary = try Vocabulary(metadata: minimal)
        #expect(vocabulary.scores.allSatisfy { $0 == 0 })
        #expect(vocabulary.tokenTypes.allSatisfy { $0 == Vocabulary.TokenType.normal.rawValue })
        #expect(vocabulary.bosID == 1 && vocabulary.eosID == 2 && vocabulary.unknownID == 0)
        #expect(vocabulary.addBOS && vocabulary.addSpacePrefix)
        let noPrefix = try Vocabulary(metadata: Self.changed(VocabularyKey.addSpacePrefix, to: .bool(false)))
        #expect(!noPrefix.addSpacePrefix)
    }

    static let badCases: [(name: String, metadata: [String: GGUFValue], error: VocabularyError)] = [
        ("no model", changed(VocabularyKey.model, to: nil), .missingKey(VocabularyKey.model)),
        ("model not a string", changed(VocabularyKey.model, to: .uint32(1)), .malformedKey(VocabularyKey.model, expected: "a string")),
        ("BPE model", changed(VocabularyKey.model, to: .string("gpt2")), .unsupportedTokenizerModel("gpt2")),
        ("no tokens", changed(VocabularyKey.tokens, to: nil), .missingKey(VocabularyKey.tokens)),
        ("tokens not strings", changed(VocabularyKey.tokens, to: .array(elementType: .int32, [.int32(1)])),
         .malformedKey(VocabularyKey.tokens, expected: "an array of strings")),
        ("tokens not an array", changed(VocabularyKey.tokens, to: .string("a")),
         .malformedKey(VocabularyKey.tokens, expected: "an array of strings")),
        ("empty token list", changed(VocabularyKey.tokens, to: .array(elementType: .string, [])), .emptyVocabulary),
        ("too few scores", changed(VocabularyKey.scores, to: .array(elementType: .float32, [.float32(0)])),
         .lengthMismatch(key: VocabularyKey.scores, count: 1, tokenCount: 261)),
        ("scores not numbers", changed(VocabularyKey.scores, to: .array(elementType: .string, Array(repeating: .string("x"), count: 261))),
         .malformedKey(VocabularyKey.scores, expected: "an array of numbers")),
        ("too many token types", changed(VocabularyKey.tokenTypes, to: .array(elementType: .int32, Array(repeating: .int32(1), count: 262))),
         .lengthMismatch(key: VocabularyKey.tokenTypes, count: 262, tokenCount: 261)),
        ("token types not an array", changed(VocabularyKey.tokenTypes, to: .int32(1)),
         .malformedKey(VocabularyKey.tokenTypes, expected: "an array of integers")),
        ("BOS out of range", changed(VocabularyKey.bosID, to: .uint32(5000)),
         .specialTokenOutOfRange(key: VocabularyKey.bosID, id: 5000, vocabularySize: 261)),
        ("EOS negative", changed(VocabularyKey.eosID, to: .int32(-1)),
         .specialTokenOutOfRange(key: VocabularyKey.eosID, id: -1, vocabularySize: 261)),
        ("unknown id not an integer", changed(VocabularyKey.unknownID, to: .string("0")),
         .malformedKey(VocabularyKey.unknownID, expected: "an integer token id")),
        ("add_bos not a boolean", changed(VocabularyKey.addBOS, to: .uint8(1)), .malformedKey(VocabularyKey.addBOS, expected: "a boolean")),
        ("duplicate token", edited { tokens, _ in tokens[260] = "▁" }, .duplicateToken(text: "▁", firstID: 259, secondID: 260)),
        ("missing byte token", edited { tokens, types in tokens[3 + 0x80] = "x"; types[3 + 0x80] = 1 }, .missingByteToken(0x80)),
        ("malformed byte token", edited { tokens, _ in tokens[3 + 0x41] = "<0x4G>" }, .malformedByteToken(id: 3 + 0x41, text: "<0x4G>")),
    ]

    @Test("bad metadata throws an error naming what is wrong", arguments: badCases.indices)
    func badMetadata(index: Int) {
        let (name, metadata, expected) = Self.badCases[index]
        #expect(throws: expected, "\(name)") { try Vocabulary(metadata: metadata) }
    }

    @Test("error messages name the key")
    func messagesNameKeys() {
        let error = VocabularyError.lengthMismatch(key: VocabularyKey.scores, count: 1, tokenCount: 261)
        #expect(error.description.contains("tokenizer.ggml.scores"))
        #expect(VocabularyError.missingKey(VocabularyKey.tokens).description.contains("tokenizer.ggml.tokens"))
        #expect(VocabularyError.unsupportedTokenizerModel("gpt2").description.contains("gpt2"))
    }

    @Test("array-built vocabularies are validated too")
    func arrayValidation() {
        #expect(throws: VocabularyError.emptyVocabulary) {
            try Vocabulary(tokens: [], scores: [], tokenTypes: [])
        }
        #expect(throws: VocabularyError.lengthMismatch(key: VocabularyKey.tokenTypes, count: 0, tokenCount: 1)) {
            try Vocabulary(tokens: ["a"], scores: [0], tokenTypes: [])
        }
        #expect(throws: VocabularyError.addBOSWithoutBOSToken) {
            try Vocabulary(tokens: ["a"], scores: [0], tokenTypes: [1], bosID: -1, eosID: -1, unknownID: -1, addBOS: true)
        }
    }

    @Test("GGUF files: a good one loads, a BPE one and one without tokens are refused")
    func files() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vocabulary-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        func write(_ metadata: [String: GGUFValue], _ name: String) throws -> GGUFFile {
            let writer = GGUFWriter()
            for key in metadata.keys.sorted() { writer.set(key, metadata[key]!) }
            let path = directory.appendingPathComponent(name).path
            try writer.write(to: path)
            return try GGUFFile(path: path)
        }

        let good = try Vocabulary(gguf: try write(Self.validMetadata(), "good.gguf"))
        #expect(LlamaTokenizer(vocabulary: good).encode("a a") == [1, 259, 260, 259, 260])
        #expect(throws: VocabularyError.unsupportedTokenizerModel("gpt2")) {
            try Vocabulary(gguf: try write(Self.changed(VocabularyKey.model, to: .string("gpt2")), "bpe.gguf"))
        }
        #expect(throws: VocabularyError.missingKey(VocabularyKey.tokens)) {
            try Vocabulary(gguf: try write(Self.changed(VocabularyKey.tokens, to: nil), "no-tokens.gguf"))
        }
    }
}
