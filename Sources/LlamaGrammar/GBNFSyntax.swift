// MARK: - GBNF syntax tree

/// One expression of a GBNF rule body, as parsed (before repetitions are expanded).
indirect enum GBNFExpression: Sendable {
    /// `a | b | c` (at least one alternative).
    case alternatives([GBNFExpression])
    /// `a b c` (possibly empty: the empty sequence matches the empty text).
    case sequence([GBNFExpression])
    /// `"abc"`: the code points one after another.
    case literal([UInt32])
    /// `[a-z]`, `[^"]`, `.`: one code point of the set.
    case characterClass(CodePointSet)
    /// A reference to the rule `name`, written at `place`.
    case ruleReference(String, SourcePlace)
    /// `e*`, `e+`, `e?`, `e{m}`, `e{m,}`, `e{m,n}`; `max == nil` means unbounded.
    case repetition(GBNFExpression, min: Int, max: Int?, SourcePlace)
}

/// A 1-based line and column in the GBNF text.
struct SourcePlace: Sendable, Equatable {
    var line: Int
    var column: Int
}

/// A rule definition `name ::= body`.
struct GBNFRule: Sendable {
    var name: String
    var body: GBNFExpression
    var place: SourcePlace
}

/// The largest repetition count `{m,n}` accepted, to keep compiled grammars small.
let maxRepetitionBound = 10_000

/// The deepest expression accepted (groups, alternatives and repetitions inside each other),
/// to keep the recursion of compiling it (and of freeing it) well inside a thread's stack.
let maxExpressionHeight = 256

/// The most terminals and rule references a compiled grammar may hold, counting every copy
/// a repetition makes.
let maxCompiledSize = 1 << 20
