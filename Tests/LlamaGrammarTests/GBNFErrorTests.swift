import LlamaGrammar
import Testing

// MARK: - GBNF errors

@Suite("GBNF errors")
struct GBNFErrorTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var source: String
        var kind: GrammarError.Kind
        var line: Int?
        var column: Int?
        var fragment: String
        var testDescription: String { fragment }
    }

    static let cases: [Case] = [
        Case(source: "root ::= item", kind: .undefinedRule, line: 1, column: 10, fragment: "undefined rule 'item'"),
        Case(source: "start ::= \"a\"", kind: .missingRoot, line: nil, column: nil, fragment: "no rule named 'root'"),
        Case(source: "", kind: .missingRoot, line: nil, column: nil, fragment: "defines no rules"),
        Case(source: "root ::= \"abc", kind: .syntax, line: 1, column: 10, fragment: "unterminated string literal"),
        Case(source: "root ::= [a-z", kind: .syntax, line: 1, column: 10, fragment: "unterminated character class"),
        Case(source: "root ::= \"a\"{3,1}", kind: .syntax, line: 1, column: 13, fragment: "bad repetition bound {3,1}"),
        Case(source: "root ::= \"a\"{x}", kind: .syntax, line: 1, column: 14, fragment: "expected a number after '{'"),
        Case(source: "root ::= \"a\"{2", kind: .syntax, line: 1, column: 15, fragment: "expected '}'"),
        Case(source: "root ::= \"a\"{20000}", kind: .syntax, line: 1, column: 14, fragment: "counts above 10000"),
        Case(source: "root ::= \"\\q\"", kind: .syntax, line: 1, column: 11, fragment: "unknown escape sequence '\\q'"),
        Case(source: "root ::= \"\\x4\"", kind: .syntax, line: 1, column: 11, fragment: "needs 2 hexadecimal digits"),
        Case(source: "root ::= \"\\uD800\"", kind: .syntax, line: 1, column: 11, fragment: "names no Unicode scalar"),
        Case(source: "root ::= [z-a]", kind: .syntax, line: 1, column: 11, fragment: "reversed character range"),
        Case(source: "root \"a\"", kind: .syntax, line: 1, column: 6, fragment: "expected '::=' after the rule name 'root'"),
        Case(source: "::= \"a\"", kind: .syntax, line: 1, column: 1, fragment: "expected a rule name"),
        Case(source: "root ::= ( \"a\" \n\n", kind: .syntax, line: 3, column: 1, fragment: "expected ')' to close the '('"),
        Case(source: "root ::= \"a\" )", kind: .syntax, line: 1, column: 14, fragment: "no '(' is open"),
        Case(source: "root ::= * \"a\"", kind: .syntax, line: 1, column: 10, fragment: "'*' has nothing before it"),
        Case(source: "root ::= \"a\"\nroot ::= \"b\"", kind: .syntax, line: 2, column: 1, fragment: "defined twice"),
        Case(source: "root ::= \"a\"\n  \"b\"", kind: .syntax, line: 2, column: 3,
             fragment: "expected a rule name, found '\"' (a new line starts a new rule"),
        Case(source: "root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]",
             kind: .leftRecursion, line: 2, column: 1, fragment: "left recursion: rule 'expr' can reach itself"),
        Case(source: "root ::= a\na ::= b \"x\"\nb ::= a | \"y\"",
             kind: .leftRecursion, line: 2, column: 1, fragment: "(a -> b -> a)"),
        Case(source: "root ::= opt root \"x\" | \"y\"\nopt ::= \"o\"?",
             kind: .leftRecursion, line: 1, column: 1, fragment: "rule 'root' can reach itself"),
        Case(source: "root ::= (\"a\"?)*", kind: .leftRecursion, line: 1, column: 16, fragment: "can match the empty text"),
        Case(source: "root ::= \"a\" | root", kind: .leftRecursion, line: 1, column: 1, fragment: "(root -> root)"),
    ]

    @Test("errors name the fault and its place", arguments: cases)
    func error(_ testCase: Case) throws {
        do {
            _ = try Grammar(gbnf: testCase.source)
            Issue.record("no error for \(testCase.source)")
        } catch let error as GrammarError {
            #expect(error.kind == testCase.kind, "\(error)")
            #expect(error.line == testCase.line, "\(error)")
            #expect(error.column == testCase.column, "\(error)")
            #expect(error.description.contains(testCase.fragment), "\(error)")
            if let line = testCase.line {
                #expect(error.description.hasPrefix("grammar error at line \(line), column"))
            }
        }
    }
}
