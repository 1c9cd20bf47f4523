// MARK: - GBNF parser

/// Parses GBNF text into rule definitions, following llama.cpp's grammar parser: a rule
/// is `name ::= alternatives`, ended by a newline (or the end of the text); newlines are
/// whitespace only after `::=`, after `|` and inside parentheses; `#` starts a comment
/// that runs to the end of the line.
struct GBNFParser {
    private let text: [Unicode.Scalar]
    private var position = 0
    private var lineStarts: [Int] = [0]
    /// Groups open at `position`.
    private var openGroups = 0
    /// The height of the expression the last `parseSequence` or `parseAlternatives` returned
    /// (a terminal or reference is 1; a group, sequence or repetition one more than the
    /// highest expression in it).
    private var height = 0

    init(_ source: String) {
        text = Array(source.unicodeScalars)
        for (index, scalar) in text.enumerated() where scalar == "\n" {
            lineStarts.append(index + 1)
        }
    }

    // MARK: - Rules

    /// Parses the whole text.
    mutating func parseRules() throws -> [GBNFRule] {
        var rules: [GBNFRule] = []
        skipSpace(newlines: true)
        while !atEnd {
            rules.append(try parseRule())
        }
        return rules
    }

    private mutating func parseRule() throws -> GBNFRule {
        let place = self.place(position)
        guard let name = parseName() else {
            throw error("expected a rule name, found \(describe(peek))" + (position > 0
                ? " (a new line starts a new rule unless it follows '|' or is inside parentheses)" : ""))
        }
        skipSpace(newlines: false)
        guard consume("::=") else {
            throw error("expected '::=' after the rule name '\(name)', found \(describe(peek))")
        }
        skipSpace(newlines: true)
        let body = try parseAlternatives(nested: false)
        if peek == "\r" {
            position += 1
            if peek == "\n" { position += 1 }
        } else if peek == "\n" {
            position += 1
        } else if !atEnd {
            throw error("expected the end of the line after rule '\(name)', found \(describe(peek))"
                + (peek == ")" ? " (no '(' is open)" : ""))
        }
        skipSpace(newlines: true)
        return GBNFRule(name: name, body: body, place: place)
    }

    // MARK: - Expressions

    private mutating func parseAlternatives(nested: Bool) throws -> GBNFExpression {
        var alternatives = [try parseSequence(nested: nested)]
        var highest = height
        while peek == "|" {
            position += 1
            skipSpace(newlines: true)
            alternatives.append(try parseSequence(nested: nested))
            highest = max(highest, height)
        }
        if alternatives.count == 1 { return alternatives[0] }
        try setHeight(highest + 1)
        return .alternatives(alternatives)
    }

    private mutating func parseSequence(nested: Bool) throws -> GBNFExpression {
        var items: [GBNFExpression] = []
        var heights: [Int] = []  // of `items`
        func finish() throws -> GBNFExpression {
            try setHeight((heights.max() ?? 0) + 1)
            return .sequence(items)
        }
        while let scalar = peek {
            let start = position
            switch scalar {
            case "\"":
                items.append(try parseLiteral())
                heights.append(1)
            case "[":
                items.append(try parseCharacterClass())
                heights.append(1)
            case ".":
                position += 1
                items.append(.characterClass(.all))
                heights.append(1)
            case "(":
                guard openGroups < maxExpressionHeight else {
                    throw error("groups nest more than \(maxExpressionHeight) deep")
                }
                position += 1
                openGroups += 1
                skipSpace(newlines: true)
                let inner = try parseAlternatives(nested: true)
                guard peek == ")" else {
                    throw error("expected ')' to close the '(' at \(describe(place(start))), found \(describe(peek))")
                }
                position += 1
                openGroups -= 1
                items.append(inner)
                heights.append(height)
            case "*", "+", "?", "{":
                guard let last = items.popLast() else {
                    throw error("'\(scalar)' has nothing before it to repeat")
                }
                let (min, max) = try parseRepetitionBounds()
                items.append(.repetition(last, min: min, max: max, place(start)))
                heights.append(heights.removeLast() + 1)
                if heights.last! > maxExpressionHeight {
                    throw GrammarError(.syntax, "groups and repetitions nest more than \(maxExpressionHeight) deep",
                                       line: place(start).line, column: place(start).column)
                }
            default:
                guard isWordCharacter(scalar) else {
                    return try finish()
                }
                let name = parseName()!
                items.append(.ruleReference(name, place(start)))
                heights.append(1)
            }
            skipSpace(newlines: nested)
        }
        return try finish()
    }

    /// Records the height of the expression about to be returned, which must not pass
    /// `maxExpressionHeight` (compiling a grammar walks its expressions recursively).
    private mutating func setHeight(_ value: Int) throws {
        guard value <= maxExpressionHeight else {
            throw error("groups and repetitions nest more than \(maxExpressionHeight) deep")
        }
        height = value
    }

    /// Parses `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}`.
    private mutating func parseRepetitionBounds() throws -> (Int, Int?) {
        let start = position
        let scalar = text[position]
        position += 1
        switch scalar {
        case "*": return (0, nil)
        case "+": return (1, nil)
        case "?": return (0, 1)
        default: break
        }
        skipSpace(newlines: true)
        guard let min = try parseCount() else {
            throw error("expected a number after '{', found \(describe(peek))")
        }
        skipSpace(newlines: true)
        var max: Int? = min
        if peek == "," {
            position += 1
            skipSpace(newlines: true)
            max = try parseCount()
            skipSpace(newlines: true)
        }
        guard peek == "}" else {
            throw error("expected '}' to close the repetition '{' at \(describe(place(start))), found \(describe(peek))")
        }
        position += 1
        if let max, max < min {
            throw GrammarError(.syntax, "bad repetition bound {\(min),\(max)}: the maximum is below the minimum",
                               line: place(start).line, column: place(start).column)
        }
        return (min, max)
    }

    private mutating func parseCount() throws -> Int? {
        let start = position
        var value = 0
        while let scalar = peek, ("0"..."9").contains(scalar) {
            value = value * 10 + Int(scalar.value - 48)
            position += 1
            if value > maxRepetitionBound {
                throw GrammarError(.syntax, "bad repetition bound: counts above \(maxRepetitionBound) are not supported",
                                   line: place(start).line, column: place(start).column)
            }
        }
        return position == start ? nil : value
    }

    // MARK: - Terminals

    private mutating func parseLiteral() throws -> GBNFExpression {
        let start = position
        position += 1
        var codes: [UInt32] = []
        while true {
            guard let scalar = peek else {
                throw GrammarError(.syntax, "unterminated string literal (no closing '\"')",
                                   line: place(start).line, column: place(start).column)
            }
            if scalar == "\"" { break }
            codes.append(try parseCharacter())
        }
        position += 1
        return .literal(codes)
    }

    private mutating func parseCharacterClass() throws -> GBNFExpression {
        let start = position
        position += 1
        var negated = false
        if peek == "^" {
            negated = true
            position += 1
        }
        var ranges: [ClosedRange<UInt32>] = []
        while peek != "]" {
            guard peek != nil else {
                throw GrammarError(.syntax, "unterminated character class (no closing ']')",
                                   line: place(start).line, column: place(start).column)
            }
            let rangeStart = position
            let low = try parseCharacter()
            if peek == "-", position + 1 < text.count, text[position + 1] != "]" {
                position += 1
                let high = try parseCharacter()
                guard low <= high else {
                    throw GrammarError(.syntax, "reversed character range (the end is below the start)",
                                       line: place(rangeStart).line, column: place(rangeStart).column)
                }
                ranges.append(low...high)
            } else {
                ranges.append(low...low)
            }
        }
        position += 1
        let set = CodePointSet(ranges: ranges)
        return .characterClass(negated ? set.complement : set)
    }

    /// One character of a literal or class: itself, or an escape `\n \t \r \\ \" \[ \] \xHH
    /// \uHHHH \UHHHHHHHH`.
    private mutating func parseCharacter() throws -> UInt32 {
        let start = position
        let scalar = text[position]
        position += 1
        guard scalar == "\\" else { return scalar.value }
        guard let escape = peek else {
            throw error("unterminated escape sequence at the end of the text")
        }
        position += 1
        let digits: Int
        switch escape {
        case "n": return 0x0A
        case "t": return 0x09
        case "r": return 0x0D
        case "\\", "\"", "[", "]": return escape.value
        case "x": digits = 2
        case "u": digits = 4
        case "U": digits = 8
        default:
            throw GrammarError(.syntax, "unknown escape sequence '\\\(escape)'",
                               line: place(start).line, column: place(start).column)
        }
        var value: UInt32 = 0
        for _ in 0..<digits {
            guard let hex = peek, let digit = hex.isASCII ? hexValue(UInt8(hex.value)) : nil else {
                throw GrammarError(.syntax, "the escape '\\\(escape)' needs \(digits) hexadecimal digits",
                                   line: place(start).line, column: place(start).column)
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        guard value <= CodePointSet.maxCodePoint, !(0xD800...0xDFFF).contains(value) else {
            throw GrammarError(.syntax, "the escape '\\\(escape)' names no Unicode scalar value",
                               line: place(start).line, column: place(start).column)
        }
        return value
    }

    // MARK: - Lexical helpers

    private var atEnd: Bool { position >= text.count }
    private var peek: Unicode.Scalar? { position < text.count ? text[position] : nil }

    private mutating func parseName() -> String? {
        var name = String.UnicodeScalarView()
        while let scalar = peek, isWordCharacter(scalar) {
            name.append(scalar)
            position += 1
        }
        return name.isEmpty ? nil : String(name)
    }

    private func isWordCharacter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", "-": return true
        default: return false
        }
    }

    private mutating func consume(_ word: String) -> Bool {
        let scalars = Array(word.unicodeScalars)
        guard position + scalars.count <= text.count,
              Array(text[position..<(position + scalars.count)]) == scalars else { return false }
        position += scalars.count
        return true
    }

    /// Skips spaces, tabs and comments, and newlines too when `newlines`.
    private mutating func skipSpace(newlines: Bool) {
        while let scalar = peek {
            if scalar == " " || scalar == "\t" || (newlines && (scalar == "\n" || scalar == "\r")) {
                position += 1
            } else if scalar == "#" {
                while let next = peek, next != "\n", next != "\r" { position += 1 }
            } else {
                return
            }
        }
    }

    private func place(_ index: Int) -> SourcePlace {
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if lineStarts[middle] <= index { low = middle } else { high = middle - 1 }
        }
        return SourcePlace(line: low + 1, column: index - lineStarts[low] + 1)
    }

    private func error(_ message: String) -> GrammarError {
        let here = place(position)
        return GrammarError(.syntax, message, line: here.line, column: here.column)
    }

    private func describe(_ scalar: Unicode.Scalar?) -> String {
        guard let scalar else { return "the end of the text" }
        switch scalar {
        case "\n", "\r": return "the end of the line"
        default: return "'\(Character(scalar))'"
        }
    }

    private func describe(_ place: SourcePlace) -> String {
        "line \(place.line), column \(place.column)"
    }
}

/// The value of an ASCII hexadecimal digit.
func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case 0x30...0x39: return byte - 0x30
    case 0x41...0x46: return byte - 0x41 + 10
    case 0x61...0x66: return byte - 0x61 + 10
    default: return nil
    }
}
