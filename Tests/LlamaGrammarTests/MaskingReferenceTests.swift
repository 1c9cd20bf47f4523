import TestSupport
import LlamaGrammar
import Testing

// MARK: - Masks against a brute-force reference

/// Random GBNF grammars over a small alphabet of ASCII, multi-byte characters and JSON
/// punctuation (left-recursive draws are skipped).
struct RandomGrammarGenerator {
    var generator: SeededGenerator
    static let literals = ["a", "ab", " ", "\\\"", "é", "日本", "😀", "{", "}", ",", "0", "the", "ing", "\\n", "ü"]
    static let classes = ["[a-z]", "[^a-z]", "[0-9]", "[α-ω]", "[\\x00-\\x7F]", ".", "[^\\x00-\\x7F]", "[ \\t]"]

    mutating func pick<T>(_ items: [T]) -> T { items[Int(generator.next() % UInt64(items.count))] }
    mutating func chance(_ percent: UInt64) -> Bool { generator.next() % 100 < percent }

    mutating func expression(depth: Int, rules: Int) -> String {
        var items: [String] = []
        for _ in 0..<(1 + Int(generator.next() % 3)) {
            var item: String
            switch generator.next() % 10 {
            case 0...3: item = "\"" + pick(RandomGrammarGenerator.literals) + "\""
            case 4...6: item = pick(RandomGrammarGenerator.classes)
            case 7 where rules > 1: item = "r\(1 + Int(generator.next() % UInt64(rules - 1)))"
            default: item = depth > 0 ? "( " + alternatives(depth: depth - 1, rules: rules) + " )" : "\"x\""
            }
            if chance(30) { item += pick(["*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}"]) }
            items.append(item)
        }
        return items.joined(separator: " ")
    }

    mutating func alternatives(depth: Int, rules: Int) -> String {
        (0..<(1 + Int(generator.next() % 3))).map { _ in expression(depth: depth, rules: rules) }
            .joined(separator: " | ")
    }

    mutating func grammar() -> String {
        let rules = 1 + Int(generator.next() % 4)
        var text = "root ::= " + alternatives(depth: 2, rules: rules) + "\n"
        for index in 1..<max(rules, 1) { text += "r\(index) ::= " + alternatives(depth: 1, rules: rules) + "\n" }
        return text
    }
}

@Suite("Masks agree with a brute-force reference")
struct MaskingReferenceTests {
    /// Walks `steps` random tokens under `grammar`; at every state checks that the mask
    /// equals the tokens that `accept` takes on a copy, and the tokens a fresh matcher fed
    /// the same tokens allows. Returns the number of states checked.
    @discardableResult
    private func check(_ grammar: Grammar, steps: Int, generator: inout SeededGenerator) throws -> Int {
        let vocabulary = RealVocabulary.grammarVocabulary
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: vocabulary)
        var tokens: [Int32] = []
        var logits = [Float](repeating: 0, count: vocabulary.count)
        var checked = 0
        for _ in 0..<steps {
            for index in logits.indices { logits[index] = 0 }
            logits.withUnsafeMutableBufferPointer { matcher.mask(logits: $0) }
            let masked = logits.indices.filter { logits[$0] == 0 }.map(Int32.init)
            var reference: [Int32] = []
            for token in 0..<Int32(vocabulary.count) {
                var copy = matcher
                if (try? copy.accept(token)) != nil { reference.append(token) }
            }
            #expect(masked == reference, "mask differs after \(tokens)")
            var fresh = GrammarMatcher(grammar: grammar, vocabulary: vocabulary, rememberedMasks: 0)
            for token in tokens { try fresh.accept(token) }
            #expect(fresh.allowedTokens() == reference, "a fresh matcher differs after \(tokens)")
            checked += 1
            let choices = reference.filter { $0 != vocabulary.endOfText }
            guard !choices.isEmpty else { break }
            let token = choices[Int(generator.next() % UInt64(choices.count))]
            try matcher.accept(token)
            tokens.append(token)
        }
        return checked
    }

    @Test("random grammars, random states")
    func randomGrammars() throws {
        var source = RandomGrammarGenerator(generator: SeededGenerator(seed: 42))
        var generator = SeededGenerator(seed: 7)
        var grammars = 0
        var states = 0
        while grammars < 16 {
            let text = source.grammar()
            guard let grammar = try? Grammar(gbnf: text) else { continue }
            grammars += 1
            states += try check(grammar, steps: 8, generator: &generator)
        }
        #expect(states >= 40)
    }

    @Test("JSON and schema grammars, random states")
    func jsonGrammars() throws {
        var generator = SeededGenerator(seed: 99)
        try check(try Grammar(gbnf: Grammar.jsonObjectGBNF), steps: 25, generator: &generator)
        for (_, schema) in SampleSchemas.all.prefix(3) {
            try check(try Grammar(jsonSchema: try JSONSchemaValue(json: schema)), steps: 12, generator: &generator)
        }
    }
}
