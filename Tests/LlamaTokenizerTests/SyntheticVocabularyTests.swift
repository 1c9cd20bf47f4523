import TestSupport
import LlamaTokenizer
import Testing

/// A small vocabulary: <unk>, <s>, </s>, the 256 byte tokens (ids 3...258), then `extra`
/// from id 259 on.
func makeVocabulary(
    _ extra: [(text: String, score: Float, type: Vocabulary.TokenType)],
    addSpacePrefix: Bool = true
) throws -> Vocabulary {
    var tokens = ["<unk>", "<s>", "</s>"]
    var scores: [Float] = [0, 0, 0]
    var types: [Vocabulary.TokenType] = [.unknown, .control, .control]
    for byte in 0...255 {
        tokens.append("<0x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true) + ">")
        scores.append(0)
        types.append(.byte)
    }
    for token in extra {
        tokens.append(token.text)
        scores.append(token.score)
        types.append(token.type)
    }
    return try Vocabulary(tokens: tokens, scores: scores, tokenTypes: types.map(\.rawValue), addSpacePrefix: addSpacePrefix)
}

@Suite("Merging rules on small vocabularies")
struct SyntheticVocabularyTests {
    @Test("the pair forming the highest-scoring token merges first")
    func scoreOrder() throws {
        // 259 a, 260 b, 261 c, 262 ab, 263 bc
        let bcFirst = LlamaTokenizer(vocabulary: try makeVocabulary(
            [("a", -10, .normal), ("b", -10, .normal), ("c", -10, .normal), ("ab", -5, .normal), ("bc", -1, .normal)],
            addSpacePrefix: false))
        #expect(bcFirst.encode("abc", addBOS: false) == [259, 263])
        let abFirst = LlamaTokenizer(vocabulary: try makeVocabulary(
            [("a", -10, .normal), ("b", -10, .normal), ("c", -10, .normal), ("ab", -1, .normal), ("bc", -5, .normal)],
            addSpacePrefix: false))
        #expect(abFirst.encode("abc", addBOS: false) == [262, 261])
    }

    @Test("equal scores merge the leftmost pair first")
    func leftmostTie() throws {
        // 259 a, 260 aa
        let tokenizer = LlamaTokenizer(vocabulary: try makeVocabulary([("a", -10, .normal), ("aa", -1, .normal)], addSpacePrefix: false))
        #expect(tokenizer.encode("aaa", addBOS: false) == [260, 259])
        #expect(tokenizer.encode("aaaaa", addBOS: false) == [260, 260, 259])
    }

    @Test("merged symbols go on merging into longer tokens")
    func chainedMerges() throws {
        // 259 ▁, 260 a, 261 b, 262 c, 263 ab, 264 abc, 265 ▁abc
        let tokenizer = LlamaTokenizer(vocabulary: try makeVocabulary([
            ("▁", -20, .normal), ("a", -20, .normal), ("b", -20, .normal), ("c", -20, .normal),
            ("ab", -3, .normal), ("abc", -2, .normal), ("▁abc", -1, .normal),
        ]))
        #expect(tokenizer.encode("abc", addBOS: false) == [265])
        #expect(tokenizer.encode("abc abc") == [1, 265, 265])
        // "d" is no token: its byte token (0x64 + 3) takes its place.
        #expect(tokenizer.encode("abcd", addBOS: false) == [265, 0x64 + 3])
        #expect(tokenizer.decode([265, 265]) == "abc abc")
    }

    @Test("without a space prefix nothing is added or removed")
    func noSpacePrefix() throws {
        // 259 ▁, 260 a
        let tokenizer = LlamaTokenizer(vocabulary: try makeVocabulary([("▁", -1, .normal), ("a", -1, .normal)], addSpacePrefix: false))
        #expect(tokenizer.encode("a a", addBOS: false) == [260, 259, 260])
        #expect(tokenizer.encode(" a", addBOS: false) == [259, 260])
        #expect(tokenizer.decode([259, 260]) == " a")
    }

    @Test("user-defined tokens are split out first, and text after them gets a space prefix")
    func userDefinedTokens() throws {
        // 259 ▁, 260 h, 261 i, 262 <|x|>, 263 <|x|>y (longer, tried first), 264 unused, 265 hi, 266 ▁hi
        let tokenizer = LlamaTokenizer(vocabulary: try makeVocabulary([
            ("▁", -5, .normal), ("h", -5, .normal), ("i", -5, .normal),
            ("<|x|>", 0, .userDefined), ("<|x|>y", 0, .userDefined), ("zz", 0, .unused),
            ("hi", -2, .normal), ("▁hi", -1, .normal),
        ]))
        #expect(tokenizer.encode("hi<|x|>hi") == [1, 266, 262, 266])
        #expect(tokenizer.encode("<|x|>hi<|x|>", addBOS: false) == [262, 266, 262])
        #expect(tokenizer.encode("<|x|>y<|x|>", addBOS: false) == [263, 262])
        #expect(tokenizer.decode([262, 266, 262]) == "<|x|> hi<|x|>")
        #expect(tokenizer.piece(264).isEmpty)
        #expect(!tokenizer.isControl(262))
    }

    @Test("a vocabulary without <0xHH> for an ASCII byte is accepted when the byte has a token of its own")
    func rawByteFallback() throws {
        var tokens = ["<unk>", "<s>", "</s>"]
        for byte in 0...255 where byte != 0x41 {
            tokens.append("<0x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true) + ">")
        }
        tokens.append("A")
        let count = tokens.count
        let vocabulary = try Vocabulary(tokens: tokens, scores: .init(repeating: 0, count: count),
                                        tokenTypes: .init(repeating: 1, count: count), addSpacePrefix: false)
        #expect(LlamaTokenizer(vocabulary: vocabulary).encode("A", addBOS: false) == [Int32(count - 1)])
    }
}
