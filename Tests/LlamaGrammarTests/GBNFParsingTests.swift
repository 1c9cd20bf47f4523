import LlamaGrammar
import Testing

// MARK: - GBNF constructs

@Suite("GBNF constructs")
struct GBNFParsingTests {
    @Test("literals with every escape")
    func literalEscapes() throws {
        let grammar = try Grammar(gbnf: #"root ::= "a\n\t\r\\\"\[\]\x41\u00e9\U0001F600""#)
        #expect(matches(grammar, "a\n\t\r\\\"[]Aé😀"))
        #expect(!matches(grammar, "a\n\t\r\\\"[]Aé"))
        #expect(!matches(grammar, "a\\n"))
    }

    @Test("character classes, ranges, negation and escapes inside classes")
    func characterClasses() throws {
        let word = try Grammar(gbnf: "root ::= [a-z0-9_]+")
        #expect(matches(word, "abc_09"))
        #expect(!matches(word, "abC"))
        #expect(!matches(word, ""))
        let notQuote = try Grammar(gbnf: #"root ::= [^"\\]*"#)
        #expect(matches(notQuote, "hello é 😀 [x]"))
        #expect(!matches(notQuote, "a\"b"))
        #expect(!matches(notQuote, "a\\b"))
        let escaped = try Grammar(gbnf: #"root ::= [\]\[\\\x41-\x43\n-]"#)
        for text in ["]", "[", "\\", "A", "B", "C", "\n", "-"] { #expect(matches(escaped, text), "\(text)") }
        #expect(!matches(escaped, "D"))
        let greek = try Grammar(gbnf: "root ::= [α-ω]{2}")
        #expect(matches(greek, "αω"))
        #expect(!matches(greek, "αa"))
    }

    @Test("any character")
    func anyCharacter() throws {
        let grammar = try Grammar(gbnf: #"root ::= "<" . ">""#)
        for text in ["<a>", "<é>", "<😀>", "<\n>", "<>>"] { #expect(matches(grammar, text), "\(text)") }
        #expect(!matches(grammar, "<>"))
        #expect(!matches(grammar, "<ab>"))
    }

    @Test("alternatives, sequences, groups and rule references")
    func structure() throws {
        let grammar = try Grammar(gbnf: """
            root ::= greeting ", " ( name | "you" ( "!" | "?" ) )
            greeting ::= "hi" | "hello"
            name ::= [A-Z] [a-z]*
            """)
        for text in ["hi, Ann", "hello, you!", "hi, you?", "hello, B"] { #expect(matches(grammar, text), "\(text)") }
        for text in ["hi, you", "hey, Ann", "hi,Ann", "hi, ann"] { #expect(!matches(grammar, text), "\(text)") }
    }

    @Test("repetitions *, +, ?, {m}, {m,}, {m,n}, {0,0}")
    func repetitions() throws {
        func lengths(_ operatorText: String) throws -> [Int] {
            let grammar = try Grammar(gbnf: "root ::= \"<\" \"ab\"\(operatorText) \">\"")
            return (0...6).filter { matches(grammar, "<" + String(repeating: "ab", count: $0) + ">") }
        }
        #expect(try lengths("*") == [0, 1, 2, 3, 4, 5, 6])
        #expect(try lengths("+") == [1, 2, 3, 4, 5, 6])
        #expect(try lengths("?") == [0, 1])
        #expect(try lengths("{3}") == [3])
        #expect(try lengths("{2,}") == [2, 3, 4, 5, 6])
        #expect(try lengths("{1,3}") == [1, 2, 3])
        #expect(try lengths("{0,2}") == [0, 1, 2])
        #expect(try lengths("{0,0}") == [0])
        #expect(try lengths("{ 2 , 4 }") == [2, 3, 4])
        #expect(try lengths("+?") == [0, 1, 2, 3, 4, 5, 6])
        let grouped = try Grammar(gbnf: #"root ::= ("a" | "b"){2} "c"+"#)
        #expect(matches(grouped, "abccc"))
        #expect(!matches(grouped, "ac"))
    }

    @Test("comments, rules spanning lines, CRLF, names with digits and dashes")
    func layout() throws {
        let grammar = try Grammar(gbnf: "# a comment line\r\n"
            + "root ::= # comment after ::=\r\n"
            + "  item-2 (\r\n"
            + "    \",\" item-2   # inside parentheses newlines are whitespace\n"
            + "  )* |\n"
            + "  \"none\"\n"
            + "\n"
            + "item-2 ::= [0-9]+ # trailing comment\n")
        #expect(matches(grammar, "1,22,333"))
        #expect(matches(grammar, "none"))
        #expect(!matches(grammar, "1,"))
    }

    @Test("a newline ends a rule outside parentheses")
    func newlineEndsRule() throws {
        #expect(throws: GrammarError.self) { try Grammar(gbnf: "root ::= \"a\"\n  \"b\"") }
        #expect(throws: GrammarError.self) { try Grammar(gbnf: "root ::= \"a\"\n  | \"b\"") }
        let continued = try Grammar(gbnf: "root ::= \"a\" |\n  \"b\"\nother ::= \"c\"")
        #expect(matches(continued, "b"))
        #expect(!matches(continued, "c"))
    }

    @Test("empty alternatives and another start rule")
    func emptyAndRoot() throws {
        let grammar = try Grammar(gbnf: "root ::= \"x\" tail\ntail ::= \"y\" | \"\"\nstart ::= \"s\"", root: "start")
        #expect(matches(grammar, "s"))
        #expect(!matches(grammar, "xy"))
        let optional = try Grammar(gbnf: "root ::= \"x\" tail\ntail ::= \"y\" | ")
        #expect(matches(optional, "x"))
        #expect(matches(optional, "xy"))
        let empty = try Grammar(gbnf: #"root ::= """#)
        #expect(matches(empty, ""))
        #expect(!matches(empty, "a"))
    }

    @Test("llama.cpp's json.gbnf compiles and matches JSON")
    func llamaJSON() throws {
        let grammar = try Grammar(gbnf: #"""
            root   ::= object
            value  ::= object | array | string | number | ("true" | "false" | "null") ws

            object ::=
              "{" ws (
                        string ":" ws value
                ("," ws string ":" ws value)*
              )? "}" ws

            array  ::=
              "[" ws (
                        value
                ("," ws value)*
              )? "]" ws

            string ::=
              "\"" (
                [^"\\\x7F\x00-\x1F] |
                "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
              )* "\"" ws

            number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

            # Optional space: by convention, applied in this grammar after literal chars when allowed
            ws ::= | " " | "\n" [ \t]{0,20}
            """#)
        #expect(matches(grammar, #"{"a": [1, 2.5, -3e4, true, null], "b": {"c": "d\n\u00e9"}}"#))
        #expect(!matches(grammar, #"{"a": [1, 2,]}"#))
    }
}
