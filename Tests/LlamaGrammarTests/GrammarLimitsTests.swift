import LlamaGrammar
import Testing

// MARK: - Grammars from outside stay within time, memory and stack

/// Inputs the grammar fuzzing harness (Tests/Fuzz/grammar) ran out of memory or stack on,
/// minimized, and their relatives. Without the limits most of them run for hours.
@Suite("Grammar limits", .timeLimit(.minutes(1)))
struct GrammarLimitsTests {
    /// The grammar harness's out-of-memory input, minimized: an empty literal under 18
    /// optionals has 19 derivations of the empty text, and five copies of it have 19^5, each
    /// of which used to add its own (equal) parse stacks before they were de-duplicated.
    static let nestedOptionals = "# com\rroot ::= (\"b\"){0,5} \"\"" + String(repeating: "?", count: 18)
        + "{1,5} \"c\"?????"

    @Test("equal stacks reached along many derivations are followed once")
    func nestedOptionalsOfTheEmptyText() throws {
        let grammar = try Grammar(gbnf: Self.nestedOptionals)
        #expect(matches(grammar, ""))
        #expect(matches(grammar, "bbc"))
        #expect(matches(grammar, "bbbbbc"))
        #expect(!matches(grammar, "bbbbbbc"))
        #expect(!matches(grammar, "cc"))
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        #expect(matcher.allowedTokens() == [Int32(UInt8(ascii: "b")), Int32(UInt8(ascii: "c")), ByteVocabulary.eos])
        try matcher.accept(bytes: Array("bc".utf8))
        #expect(matcher.canEnd)
        // The same with 61^10 derivations of the empty text.
        let wider = try Grammar(gbnf: "root ::= \"\"" + String(repeating: "?", count: 60) + "{1,10} \"c\"")
        #expect(matches(wider, "c"))
        #expect(!matches(wider, "") && !matches(wider, "cc"))
    }

    /// `x1 ::= x0 "a" | x0 "b"`, `x2 ::= x1 "a" | x1 "b"`, ...: the start of x(k) has 2^k
    /// distinct stacks (one per suffix of "a"s and "b"s still to come).
    static func doublingRules(_ k: Int, prefix: String = "") -> String {
        var lines = ["root ::= \(prefix)x\(k)", "x0 ::= \"c\""]
        for i in 1...k { lines.append("x\(i) ::= x\(i - 1) \"a\" | x\(i - 1) \"b\"") }
        return lines.joined(separator: "\n")
    }

    @Test("a few distinct stacks per rule still match")
    func doublingWithinTheLimit() throws {
        let grammar = try Grammar(gbnf: Self.doublingRules(10))
        #expect(matches(grammar, "c" + String(repeating: "ab", count: 5)))
        #expect(!matches(grammar, "c" + String(repeating: "ab", count: 4)))
    }

    @Test("a grammar whose start has exponentially many stacks is refused")
    func doublingAtTheStart() {
        do {
            _ = try Grammar(gbnf: Self.doublingRules(26))
            Issue.record("expected the grammar to be refused")
        } catch let error as GrammarError {
            #expect(error.kind == .tooComplex, "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("a grammar that becomes exponentially ambiguous later allows no text from there")
    func doublingLater() throws {
        let grammar = try Grammar(gbnf: Self.doublingRules(26, prefix: "\"z\" "))
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        #expect(!matcher.allows(Int32(UInt8(ascii: "z"))))
        #expect(throws: GrammarError.self) { try matcher.accept(Int32(UInt8(ascii: "z"))) }
    }

    @Test("a long run of rules matching the empty text is followed without recursion")
    func longNullableRun() throws {
        // The harness's stack overflow: 10,000 copies of a nullable rule, each popped into
        // the next while the start state is built.
        let grammar = try Grammar(gbnf: "# com\rroot ::= (\"b\"){0,5} \"\"??{10000} \"c\"")
        #expect(matches(grammar, "c"))
        #expect(matches(grammar, "bbbc"))
        #expect(!matches(grammar, "bbbbbbc"))
        let optionals = try Grammar(gbnf: "root ::= \"a\"?{10000} \"c\"")
        #expect(matches(optionals, String(repeating: "a", count: 100) + "c"))
    }

    @Test("a grammar that makes every state large is given up after a bounded amount of work")
    func totalWork() throws {
        // The fuzzer's timeout: ten thousand optional any-characters put ten thousand heads in
        // every state, and a mask over a byte vocabulary builds 256 such transitions per token:
        // minutes for a few hundred bytes. The automaton's total work is bounded instead; past
        // it the grammar allows no more text (a request's choice then ends). Here the first
        // mask already uses it up (about 10 s of work on this machine: still slow, but bounded).
        let grammar = try Grammar(gbnf: "# com\rroot ::= (\"b\"){0,5} \"\".??{10000}")
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
        let f = Int32(UInt8(ascii: "f"))
        var accepted = 0
        while accepted < 600, !matcher.allowedTokens().isEmpty, matcher.allows(f) {
            try matcher.accept(f)
            accepted += 1
        }
        #expect(accepted < 600, "\(accepted) bytes accepted")
    }

    @Test("groups and repetitions nest up to 256 deep")
    func nesting() throws {
        let deep = String(repeating: "(", count: 200) + "\"a\"" + String(repeating: ")", count: 200)
        #expect(matches(try Grammar(gbnf: "root ::= " + deep), "a"))
        #expect(matches(try Grammar(gbnf: "root ::= \"a\"" + String(repeating: "?", count: 200)), "a"))
        for source in ["root ::= " + String(repeating: "(", count: 30000) + "\"a\"" + String(repeating: ")", count: 30000),
                       "root ::= \"a\"" + String(repeating: "?", count: 60000),
                       "root ::= " + String(repeating: "(\"a\"?)", count: 1) + String(repeating: "*", count: 300)] {
            do {
                _ = try Grammar(gbnf: source)
                Issue.record("expected a nesting error for \(source.prefix(40))...")
            } catch let error as GrammarError {
                #expect(error.kind == .syntax && error.message.contains("nest more than 256 deep"), "\(error)")
            }
        }
    }

    @Test("a grammar whose repetitions expand past the size limit is refused")
    func expandedSize() throws {
        #expect(try Grammar(gbnf: "root ::= " + String(repeating: "\"a\"{10000} ", count: 50)).compiledRuleCount > 0)
        for source in ["root ::= " + String(repeating: "\"a\"{10000} ", count: 6000),
                       "root ::= x\nx ::= " + String(repeating: "\"a\"{0,10000} ", count: 130)] {
            do {
                _ = try Grammar(gbnf: source)
                Issue.record("expected a size error")
            } catch let error as GrammarError {
                #expect(error.kind == .syntax && error.message.contains("too large"), "\(error)")
            }
        }
    }

    @Test("a long property name and many required names convert without quadratic work")
    func largeSchemas() throws {
        // Each trie node of the 20,000-character name reserved the rule name "root-additional-
        // key-node" by trying every suffix from 2 up; 12,000 required names were each looked
        // up in a list of the others. In the grammar harness (with AddressSanitizer) each took
        // over a minute before, about 5 seconds now.
        let name = String(repeating: "k", count: 20000)
        let long: JSONSchemaValue = .object([("type", .string("object")),
                                             ("properties", .object([(name, .object([("type", .string("string"))]))]))])
        let grammar = try Grammar(jsonSchema: long)
        #expect(matches(grammar, "{\"\(name)\":\"v\"}"))
        #expect(!matches(grammar, "{\"\(name)\":1}"))
        let required: JSONSchemaValue = .object([("type", .string("object")),
                                                 ("required", .array((0..<12000).map { .string("r\($0)") }))])
        let gbnf = try Grammar.gbnf(jsonSchema: required)
        #expect(gbnf.contains("r11999"))
    }
}

