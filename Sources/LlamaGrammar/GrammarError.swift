// MARK: - Errors

/// An error from compiling a grammar, converting a JSON schema, or feeding a matcher a
/// token the grammar does not allow. `description` is a message fit to show an API user.
public struct GrammarError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, coarsely.
    public enum Kind: Sendable, Equatable {
        /// The GBNF text does not follow the syntax (unterminated literal, bad escape, ...).
        case syntax
        /// A rule refers to a rule that is not defined.
        case undefinedRule
        /// The grammar has no rule of the root's name.
        case missingRoot
        /// A rule can reach itself without consuming a character (it would loop).
        case leftRecursion
        /// The JSON schema uses a keyword, or a form of one, that is not supported.
        case unsupportedSchema
        /// The JSON schema is malformed (a keyword's value has the wrong type, a `$ref`
        /// points nowhere, ...).
        case invalidSchema
        /// The matcher was handed a token (or bytes) that cannot continue the text.
        case notAllowed
        /// The grammar is so ambiguous that the parse positions to follow at its start pass
        /// the matcher's limit (matching it would take exponential time and memory).
        case tooComplex
    }

    /// What went wrong, coarsely.
    public let kind: Kind
    /// What went wrong, in words (without the position).
    public let message: String
    /// 1-based line in the GBNF text, when the error has a place there.
    public let line: Int?
    /// 1-based column (in Unicode scalars) in the GBNF text, when the error has a place there.
    public let column: Int?
    /// The JSON schema keyword at fault (`"pattern"`, `"$ref"`, ...), for schema errors.
    public let keyword: String?
    /// Where in the schema, as a JSON pointer from the root (`"#/properties/name"`), for
    /// schema errors.
    public let path: String?

    init(_ kind: Kind, _ message: String, line: Int? = nil, column: Int? = nil,
         keyword: String? = nil, path: String? = nil) {
        self.kind = kind
        self.message = message
        self.line = line
        self.column = column
        self.keyword = keyword
        self.path = path
    }

    /// The message with its place: `line 3, column 9: undefined rule 'item'`, or
    /// `unsupported JSON schema keyword 'pattern' at #/properties/id`.
    public var description: String {
        if let line, let column {
            return "grammar error at line \(line), column \(column): \(message)"
        }
        if let path {
            return "\(message) at \(path)"
        }
        return message
    }
}
