import LlamaGrammar
import Testing

// MARK: - Matching text and tokens

@Suite("Matching")
struct MatchingTests {
    @Test("JSON grammar accepts and rejects documents")
    func json() throws {
        let grammar = try Grammar(gbnf: Grammar.jsonObjectGBNF)
        for text in [#"{}"#, #"{ "a" : 1 }"#, #"{"a":[1,-0,2.5e-3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"]}"#,
                     "{\n  \"a\": {\"b\": []}\n}", #"{"é😀":"日本"}"#] {
            #expect(matches(grammar, text), "\(text)")
        }
        for text in [#"[]"#, #"{"a":01}"#, #"{"a":1,}"#, #"{"a" 1}"#, #"{'a':1}"#, #"{"a":"\ud800"}"#,
                     #"{"a":"\x"}"#, "{\"a\":\"\u{01}\"}", #"{"a":1} "#, #"{"a":1.}"#, #"{"a":+1}"#,
                     "{   \"a\":1}", #"{"a":12345678901234567}"#] {
            #expect(!matches(grammar, text), "\(text)")
        }
    }

    @Test("a character split across tokens is accepted only if some completion can match")
    func partialUTF8() throws {
        let grammar = try Grammar(gbnf: "root ::= [à-ÿ] \"!\"")  // U+00E0-U+00FF: C3 A0 ... C3 BF
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        #expect(matcher.allows(0xC3))
        #expect(!matcher.allows(0xC2))   // U+0080-U+00BF: none in the class
        #expect(!matcher.allows(0xE0))
        try matcher.accept(0xC3)
        #expect(!matcher.canEnd)
        #expect(!matcher.allows(0x80))   // U+00C0 is outside
        #expect(!matcher.allows(0x21))   // the character is unfinished
        #expect(matcher.allows(0xA9))    // é
        try matcher.accept(0xA9)
        try matcher.accept(Int32(UInt8(ascii: "!")))
        #expect(matcher.isFinished)
    }

    @Test("invalid UTF-8 is rejected", arguments: [
        [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
        [0xF5, 0x80, 0x80, 0x80], [0xFF], [0x80], [0xC3, 0x41], [0xE2, 0x82, 0x41],
    ] as [[UInt8]])
    func invalidUTF8(_ bytes: [UInt8]) throws {
        let grammar = try Grammar(gbnf: "root ::= .*")
        #expect(!matches(grammar, bytes))
    }

    @Test("four-byte characters from byte-fallback tokens of the real vocabulary")
    func byteTokens() throws {
        let grammar = try Grammar(gbnf: "root ::= \"x\" [\\U0001F600-\\U0001F64F]+ \"y\"")
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: RealVocabulary.grammarVocabulary)
        try matcher.accept(text: "x")
        let bytes = Array("😀".utf8)  // F0 9F 98 80
        #expect(matcher.allows(RealVocabulary.byteToken(0xF0)))
        #expect(!matcher.allows(RealVocabulary.byteToken(0xE2)))
        try matcher.accept(RealVocabulary.byteToken(bytes[0]))
        #expect(!matcher.allows(RealVocabulary.byteToken(0x90)))  // U+1 0xxxx: below the range
        try matcher.accept(RealVocabulary.byteToken(bytes[1]))
        #expect(!matcher.allows(RealVocabulary.byteToken(0x90)))  // U+1F400 block: outside
        try matcher.accept(RealVocabulary.byteToken(bytes[2]))
        #expect(!matcher.allowedTokens().contains(RealVocabulary.eos))
        try matcher.accept(RealVocabulary.byteToken(bytes[3]))
        #expect(!matcher.canEnd)
        try matcher.accept(text: "y")
        #expect(matcher.canEnd)
        #expect(matcher.allowedTokens() == [RealVocabulary.eos])
    }

    @Test("end-of-text only where the text can end; control tokens never")
    func endOfText() throws {
        let grammar = try Grammar(gbnf: #"root ::= "ab" "c"?"#)
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        #expect(!matcher.allows(ByteVocabulary.eos))
        #expect(throws: GrammarError.self) { try matcher.accept(ByteVocabulary.eos) }
        try matcher.accept(text: "ab")
        #expect(matcher.canEnd && !matcher.isFinished)
        var logits = [Float](repeating: 0, count: 300)
        logits.withUnsafeMutableBufferPointer { matcher.mask(logits: $0) }
        let allowed = logits.indices.filter { logits[$0] == 0 }
        #expect(allowed == [Int(UInt8(ascii: "c")), 256])  // 257... are past the vocabulary
        try matcher.accept(text: "c")
        #expect(matcher.isFinished)
        try matcher.accept(ByteVocabulary.eos)
        #expect(matcher.hasEnded && !matcher.allows(ByteVocabulary.eos) && !matcher.canEnd)

        let real = RealVocabulary.tokenizer
        var any = GrammarMatcher(grammar: try Grammar(gbnf: "root ::= .*"), vocabulary: RealVocabulary.grammarVocabulary)
        #expect(any.allows(real.eosID))
        #expect(!any.allows(real.bosID))
        #expect(!any.allows(0))  // <unk>
        #expect(!any.allows(-1) && !any.allows(Int32(real.vocabularySize)))
    }

    @Test("a rejected token leaves the matcher unchanged")
    func rejection() throws {
        let grammar = try Grammar(gbnf: #"root ::= "abc""#)
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        try matcher.accept(text: "a")
        do {
            try matcher.accept(Int32(UInt8(ascii: "x")))
            Issue.record("accepted x")
        } catch let error as GrammarError {
            #expect(error.kind == .notAllowed)
        }
        #expect(throws: GrammarError.self) { try matcher.accept(text: "bx") }
        try matcher.accept(text: "bc")
        #expect(matcher.isFinished)
    }

    @Test("copies fork the state (value semantics)")
    func copies() throws {
        let grammar = try Grammar(gbnf: #"root ::= "a" ( "b" | "c" ) "d""#)
        var first = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        try first.accept(text: "a")
        var second = first
        try first.accept(text: "b")
        try second.accept(text: "c")
        #expect(first.allows(bytes: Array("d".utf8)) && second.allows(bytes: Array("d".utf8)))
        #expect(!first.allows(bytes: Array("cd".utf8)))
        var rollback = first
        try first.accept(text: "d")
        #expect(first.isFinished && !rollback.isFinished)
        try rollback.accept(text: "d")
        #expect(rollback.isFinished)
    }

    @Test("a matcher keeps working after its memo is renewed")
    func memoRenewal() throws {
        let grammar = try Grammar(gbnf: #"root ::= [a-z]{0,9500} "!""#)
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        for _ in 0..<9500 { try matcher.accept(Int32(UInt8(ascii: "q"))) }
        #expect(matcher.allowedTokens() == [Int32(UInt8(ascii: "!"))])
        try matcher.accept(text: "!")
        #expect(matcher.isFinished)
    }

    @Test("nesting: stacks grow with the depth of the text")
    func nesting() throws {
        let grammar = try Grammar(gbnf: #"root ::= "(" root ")" | "x""#)
        let deep = String(repeating: "(", count: 300) + "x" + String(repeating: ")", count: 300)
        #expect(matches(grammar, deep))
        #expect(!matches(grammar, String(deep.dropLast())))
        #expect(!matches(grammar, deep + ")"))
    }
}
