// MARK: - Compiled grammar

/// A grammar flattened for matching: every rule is a list of alternatives, every
/// alternative a run of element codes in `elements` ended by `end`. A code `>= 0` is a
/// terminal (the index of a code point set in `sets`); `end` closes an alternative; a
/// code `<= -2` refers to rule `-2 - code`. A parse position is an index into `elements`.
final class CompiledGrammar: Sendable {
    /// The code closing an alternative.
    static let end: Int32 = -1

    /// Element codes of all alternatives of all rules.
    let elements: [Int32]
    /// Position of the first element of each alternative.
    let alternativeStarts: [Int32]
    /// Rule `r`'s alternatives are `alternativeStarts[ruleAlternatives[r] ..< ruleAlternatives[r + 1]]`.
    let ruleAlternatives: [Int32]
    /// The code point sets that terminals match.
    let sets: [CodePointSet]
    /// Rule names (generated rules for groups and repetitions are named after their rule).
    let ruleNames: [String]
    /// The start rule.
    let root: Int32

    init(elements: [Int32], alternativeStarts: [Int32], ruleAlternatives: [Int32],
         sets: [CodePointSet], ruleNames: [String], root: Int32) {
        self.elements = elements
        self.alternativeStarts = alternativeStarts
        self.ruleAlternatives = ruleAlternatives
        self.sets = sets
        self.ruleNames = ruleNames
        self.root = root
    }

    /// The rule a code refers to.
    @inline(__always)
    static func rule(of code: Int32) -> Int32 { -2 - code }

    /// The code referring to `rule`.
    @inline(__always)
    static func code(ofRule rule: Int32) -> Int32 { -2 - rule }
}

// MARK: - Grammar

/// A compiled context-free grammar in llama.cpp's GBNF notation.
///
/// Supported: rules `name ::= ...` (names of letters, digits and `-`), alternatives `|`,
/// sequences, literals `"..."` with the escapes `\n \t \r \\ \" \[ \] \xHH \uHHHH
/// \UHHHHHHHH`, character classes `[a-z0-9_]` and `[^"\\]` (same escapes), `.` (any
/// character), groups `( ... )`, repetition `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` (counts
/// up to 10,000), `#` comments; groups, alternatives and repetitions nest up to 256 deep.
/// A rule ends at a newline, except after `::=` or `|` and inside parentheses. Characters
/// are Unicode scalars; text is matched as UTF-8.
/// Left-recursive grammars (a rule reaching itself without consuming a character, also
/// through a repetition of something that can match the empty text) are rejected.
/// Not supported: llama.cpp's token references `<[id]>` and `!` negation of tokens.
public struct Grammar: Sendable {
    let program: CompiledGrammar

    /// Compiles GBNF text whose start rule is `root`.
    ///
    /// - Throws: `GrammarError` naming the line, column and fault: a syntax error
    ///   (unterminated literal or class, unknown escape, bad repetition bound, missing
    ///   `::=`, unbalanced parentheses), an undefined rule, a rule defined twice, a missing
    ///   root rule, or left recursion; or, without a place, a grammar too ambiguous to match
    ///   (`.tooComplex`: its start alone has more parse positions than a matcher follows). A
    ///   grammar that becomes that ambiguous only later allows no text from that point on.
    public init(gbnf: String, root: String = "root") throws {
        var parser = GBNFParser(gbnf)
        let rules = try parser.parseRules()
        program = try GrammarLowering.compile(rules, root: root)
        let automaton = GrammarAutomaton(program: program)
        let startFits = automaton.lock.withLock {
            _ = automaton.initialState()
            return !automaton.gaveUp
        }
        guard startFits else {
            throw GrammarError(.tooComplex, "the grammar is too ambiguous to match: its start alone has more than "
                + "\(GrammarAutomaton.expansionLimit) parse positions to follow; let alternatives that begin "
                + "with the same rules share them, e.g. x ::= y (\"a\" | \"b\") rather than x ::= y \"a\" | y \"b\"")
        }
    }

    /// The number of rules after expanding groups and repetitions into rules of their own.
    public var compiledRuleCount: Int { program.ruleNames.count }
}
