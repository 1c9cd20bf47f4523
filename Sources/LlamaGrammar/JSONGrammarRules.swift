// MARK: - GBNF for JSON

/// The GBNF building blocks of JSON output, shared by `Grammar.jsonObjectGBNF` and the
/// schema converter.
///
/// Whitespace (`ws`) is allowed after `{`, `[`, `,` and `:` and before `}`, `]`, `,` and
/// `:`, and is bounded so that a model cannot loop on it: each place takes nothing, one
/// space, or one newline followed by up to 20 spaces or tabs. Nothing follows the
/// document's last character, so the grammar is finished right after it.
///
/// Strings are JSON strings: any character but `"`, `\` and U+0000-U+001F, or the escapes
/// `\" \\ \/ \b \f \n \r \t \uHHHH`, where `\uHHHH` may not name a surrogate (U+D800 to
/// U+DFFF, which common JSON parsers reject when unpaired; characters beyond U+FFFF can be
/// written directly). Numbers are JSON numbers with at most 16 integer digits, 16
/// fraction digits and 2 exponent digits (bounded so generation ends); integers have no
/// fraction or exponent.
enum JSONGrammarRules {
    /// Rule name and body of every shared rule, in a fixed order.
    static let definitions: [(String, String)] = [
        ("ws", #"( " " | "\n" [ \t]{0,20} )?"#),
        ("value", #"object | array | string | number | "true" | "false" | "null""#),
        ("object", #""{" ws ( member ( ws "," ws member )* ws )? "}""#),
        ("member", #"string ws ":" ws value"#),
        ("array", #""[" ws ( value ( ws "," ws value )* ws )? "]""#),
        ("string", #""\"" char* "\"""#),
        ("char", #"[^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" hex-escape )"#),
        ("hex-escape", #"[0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}"#),
        ("number", #"integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?"#),
        ("integer", #""-"? ( "0" | [1-9] [0-9]{0,15} )"#),
        ("boolean", #""true" | "false""#),
        ("null", #""null""#),
    ]

    /// The shared rules that `names` use, directly or through each other, in order.
    static func definitions(closing names: Set<String>) -> [(String, String)] {
        var needed = names
        var changed = true
        while changed {
            changed = false
            for (name, body) in definitions where needed.contains(name) {
                for (other, _) in definitions where !needed.contains(other) && mentions(body, other) {
                    needed.insert(other)
                    changed = true
                }
            }
        }
        return definitions.filter { needed.contains($0.0) }
    }

    /// Whether a rule body refers to the rule `name` (outside literals and classes).
    private static func mentions(_ body: String, _ name: String) -> Bool {
        var words: [String] = []
        var word = ""
        var inLiteral = false, inClass = false, escaped = false
        for character in body {
            if escaped { escaped = false; continue }
            if character == "\\" && (inLiteral || inClass) { escaped = true; continue }
            if inLiteral { if character == "\"" { inLiteral = false }; continue }
            if inClass { if character == "]" { inClass = false }; continue }
            if character == "\"" { inLiteral = true } else if character == "[" { inClass = true }
            if character.isLetter || character.isNumber || character == "-" {
                word.append(character)
            } else if !word.isEmpty {
                words.append(word)
                word = ""
            }
        }
        if !word.isEmpty { words.append(word) }
        return words.contains(name)
    }

    /// `text` as a GBNF string literal; everything outside printable ASCII, and `"` and
    /// `\`, is escaped.
    static func literal(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            out += escaped(scalar, special: ["\"", "\\"])
        }
        return out + "\""
    }

    /// A GBNF character class of `scalars`, negated when `negated`.
    static func characterClass(_ scalars: [Unicode.Scalar], negated: Bool) -> String {
        "[" + (negated ? "^" : "") + scalars.map { escaped($0, special: ["]", "[", "\\", "^", "-", "\""]) }.joined() + "]"
    }

    private static func escaped(_ scalar: Unicode.Scalar, special: Set<Unicode.Scalar>) -> String {
        if scalar.value >= 0x20 && scalar.value < 0x7F && !special.contains(scalar) {
            return String(Character(scalar))
        }
        let hex = String(scalar.value, radix: 16, uppercase: true)
        if scalar.value <= 0xFFFF {
            return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
        return "\\U" + String(repeating: "0", count: 8 - hex.count) + hex
    }
}

extension Grammar {
    /// GBNF for any JSON object (`response_format: {"type": "json_object"}`); see the
    /// notes on whitespace, strings and numbers of the JSON Schema conversion.
    public static let jsonObjectGBNF: String = {
        var text = "root ::= object\n"
        for (name, body) in JSONGrammarRules.definitions {
            text += "\(name) ::= \(body)\n"
        }
        return text
    }()
}
