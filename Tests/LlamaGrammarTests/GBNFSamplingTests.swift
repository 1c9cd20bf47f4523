import LlamaGrammar
import Testing

// MARK: - Sampling GBNF grammars, checked by separate recognizers

/// Recursive-descent recognizer of `expr ::= term ([+-] term)*`, `term ::= factor ([*/]
/// factor)*`, `factor ::= number | "(" ws expr ws ")"`, `number ::= "-"? [0-9]{1,3}`,
/// with `ws` at most one space.
struct ArithmeticRecognizer {
    let bytes: [UInt8]
    var position = 0

    static func accepts(_ text: String) -> Bool {
        var recognizer = ArithmeticRecognizer(bytes: Array(text.utf8))
        return recognizer.expression() && recognizer.position == recognizer.bytes.count
    }

    private var peek: UInt8? { position < bytes.count ? bytes[position] : nil }
    private mutating func eat(_ character: Character) -> Bool {
        guard peek == character.asciiValue else { return false }
        position += 1
        return true
    }
    private mutating func space() { _ = eat(" ") }

    mutating func expression() -> Bool {
        guard term() else { return false }
        while true {
            let mark = position
            space()
            guard eat("+") || eat("-") else { position = mark; return true }
            space()
            guard term() else { return false }
        }
    }

    mutating func term() -> Bool {
        guard factor() else { return false }
        while true {
            let mark = position
            space()
            guard eat("*") || eat("/") else { position = mark; return true }
            space()
            guard factor() else { return false }
        }
    }

    mutating func factor() -> Bool {
        if eat("(") {
            space()
            guard expression() else { return false }
            space()
            return eat(")")
        }
        _ = eat("-")
        var digits = 0
        while let byte = peek, byte >= 0x30, byte <= 0x39 { position += 1; digits += 1 }
        return digits >= 1 && digits <= 3
    }
}

@Suite("Sampling GBNF grammars with random logits")
struct GBNFSamplingTests {
    static let arithmetic = """
        root   ::= expr
        expr   ::= term ( ws [+-] ws term )*
        term   ::= factor ( ws [*/] ws factor )*
        factor ::= number | "(" ws expr ws ")"
        number ::= "-"? [0-9]{1,3}
        ws     ::= " "?
        """

    @Test("arithmetic expressions")
    func arithmetic() throws {
        let grammar = try Grammar(gbnf: GBNFSamplingTests.arithmetic)
        var sampler = RandomSampler(seed: 2024)
        var ended = 0
        for _ in 0..<200 {
            let output = sampler.sample(grammar, cap: 120)
            #expect(!output.deadEnd, "\(output.text)")
            guard output.canEnd else { continue }
            ended += 1
            #expect(ArithmeticRecognizer.accepts(output.text), "\(output.text)")
        }
        #expect(ended >= 100)
        // The recognizer is not trivially true.
        #expect(!ArithmeticRecognizer.accepts("1+") && !ArithmeticRecognizer.accepts("(1") && ArithmeticRecognizer.accepts("(1 + 2)*-3"))
    }

    @Test("lists of words with multi-byte characters")
    func unicodeList() throws {
        let grammar = try Grammar(gbnf: """
            root ::= "[" item ( ", " item ){0,4} "]"
            item ::= [a-zäöü]{1,8} | [α-ω]{1,4} | "日本" [語人]? | "😀"
            """)
        var sampler = RandomSampler(seed: 5)
        var ended = 0
        var sawMultiByte = false
        for _ in 0..<200 {
            let output = sampler.sample(grammar, cap: 80)
            #expect(!output.deadEnd, "\(output.text)")
            guard output.canEnd else { continue }
            ended += 1
            #expect(String(validating: output.bytes, as: UTF8.self) != nil, "invalid UTF-8: \(output.bytes)")
            let text = output.text
            #expect(text.hasPrefix("[") && text.hasSuffix("]"), "\(text)")
            let items = text.dropFirst().dropLast().split(separator: ", ", omittingEmptySubsequences: false)
            #expect((1...5).contains(items.count), "\(text)")
            for item in items {
                let scalars = item.unicodeScalars
                let latin = (1...8).contains(scalars.count) && scalars.allSatisfy { ("a"..."z").contains($0) || "äöü".unicodeScalars.contains($0) }
                let greek = (1...4).contains(scalars.count) && scalars.allSatisfy { ("α"..."ω").contains($0) }
                let other = ["日本", "日本語", "日本人", "😀"].contains(String(item))
                #expect(latin || greek || other, "item \(item) in \(text)")
                if item.utf8.count > scalars.count { sawMultiByte = true }
            }
        }
        #expect(ended >= 100)
        #expect(sawMultiByte)
    }
}
