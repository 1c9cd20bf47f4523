// MARK: - JSON Schema to GBNF

extension Grammar {
    /// The JSON Schema keywords `gbnf(jsonSchema:)` understands. Any other keyword is an
    /// error naming it and where it is.
    ///
    /// - `type`: `object`, `array`, `string`, `number`, `integer`, `boolean`, `null`, or an
    ///   array of these (alternatives). Without `type`, the type is inferred from the
    ///   keywords present (`properties`/`required`/`additionalProperties`: object;
    ///   `items`/`minItems`/`maxItems`: array; `minLength`/`maxLength`: string), and a
    ///   schema with none of them (or `true`) accepts any JSON value.
    /// - `properties`, `required`, `additionalProperties` (`true` or absent: any further
    ///   members, `false`: none, or a schema for their values). Members are generated in
    ///   this order: the required properties in the order of `properties` (then required
    ///   names not listed in `properties`), then each optional property (may be left out),
    ///   then additional members, whose keys are written without escapes and differ from
    ///   every named property.
    /// - `items` (one schema for every item, or a boolean), `minItems`, `maxItems`.
    /// - `enum` and `const` (any JSON values, written compactly; with `type`, only values
    ///   of that type are kept).
    /// - `anyOf` and `oneOf` (alternatives; `oneOf` is not checked for exclusivity).
    /// - `$ref` to a pointer within the document (`#/$defs/...`, `#/definitions/...`,
    ///   or any other `#/...`), also recursively; `$defs` and `definitions` hold them.
    /// - `minLength`, `maxLength` (counted in characters; a `\uHHHH` escape is one).
    /// - Annotations, ignored: `title`, `description`, `$schema`, `$id`, `examples`,
    ///   `default`, `$comment`, `deprecated`, `readOnly`, `writeOnly`.
    ///
    /// Counts (`minItems`, `maxItems`, `minLength`, `maxLength`) may be at most 10,000.
    /// Keywords that must sit alone: `$ref`, `anyOf` and `oneOf` take only annotations
    /// (and `$defs`) beside them.
    public static let supportedSchemaKeywords: [String] = [
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "minLength", "maxLength",
    ] + SchemaConverter.annotations.sorted()

    /// GBNF accepting exactly the JSON documents that are valid under `schema` (for the
    /// subset in `supportedSchemaKeywords`), with the whitespace, string and number rules
    /// of `jsonObjectGBNF`.
    ///
    /// - Throws: `GrammarError` of kind `.unsupportedSchema` (naming the keyword and its
    ///   JSON-pointer path) or `.invalidSchema` (a keyword's value of the wrong form, a
    ///   `$ref` that points nowhere or only to itself).
    public static func gbnf(jsonSchema schema: JSONSchemaValue) throws -> String {
        var converter = SchemaConverter(document: schema)
        let text = try converter.convert()
        do {
            _ = try Grammar(gbnf: text)
        } catch let error as GrammarError where error.kind == .leftRecursion {
            throw GrammarError(.invalidSchema, "the schema's references loop without any JSON text in between",
                               keyword: "$ref", path: "#")
        }
        return text
    }

    /// The grammar of `gbnf(jsonSchema:)`.
    public init(jsonSchema schema: JSONSchemaValue) throws {
        try self.init(gbnf: Grammar.gbnf(jsonSchema: schema))
    }
}

/// Builds the GBNF of a schema: one rule per object, array and referenced schema, named
/// after where it sits, and the shared JSON rules it uses.
struct SchemaConverter {
    static let annotations: Set<String> = [
        "title", "description", "$schema", "$id", "examples", "default", "$comment",
        "deprecated", "readOnly", "writeOnly",
    ]
    private static let types = ["object", "array", "string", "number", "integer", "boolean", "null"]
    private static let quote = #""\"""#

    let document: JSONSchemaValue
    private var rules: [(String, String)] = []
    private var taken = Set(JSONGrammarRules.definitions.map(\.0) + ["root", "additional-key-char"])
    /// The next suffix to try for each base name given to `reserve`, so that reserving the
    /// same base n times takes n steps, not n^2 / 2 (a trie node of a long property name is one).
    private var nextSuffix: [String: Int] = [:]
    private var shared: Set<String> = []
    private var referenceRules: [String: String] = [:]

    init(document: JSONSchemaValue) {
        self.document = document
    }

    mutating func convert() throws -> String {
        let body = try expression(document, path: "#", hint: "root")
        var text = "root ::= \(body)\n"
        for (name, body) in rules { text += "\(name) ::= \(body)\n" }
        for (name, body) in JSONGrammarRules.definitions(closing: shared) { text += "\(name) ::= \(body)\n" }
        return text
    }

    // MARK: - Schemas

    /// A GBNF expression for the values valid under `schema`.
    mutating func expression(_ schema: JSONSchemaValue, path: String, hint: String) throws -> String {
        guard case .object(let members) = schema else {
            if schema == .bool(true) { return use("value") }
            if schema == .bool(false) { throw invalid("the schema false accepts no value", nil, path) }
            throw invalid("a schema must be a JSON object or a boolean", nil, path)
        }
        let allowed = Set(Grammar.supportedSchemaKeywords)
        if let unknown = members.first(where: { !allowed.contains($0.0) }) {
            throw GrammarError(.unsupportedSchema, "unsupported JSON schema keyword '\(unknown.0)'",
                               keyword: unknown.0, path: path)
        }
        let constraints = members.map(\.0).filter {
            !SchemaConverter.annotations.contains($0) && $0 != "$defs" && $0 != "definitions"
        }
        for alone in ["$ref", "anyOf", "oneOf"] where constraints.contains(alone) {
            if let other = constraints.first(where: { $0 != alone }) {
                throw GrammarError(.unsupportedSchema, "the keyword '\(other)' beside '\(alone)' is not supported",
                                   keyword: other, path: path)
            }
        }
        if let reference = schema["$ref"] {
            return try referenceRule(reference, path: path)
        }
        for keyword in ["anyOf", "oneOf"] {
            guard let alternatives = schema[keyword] else { continue }
            guard case .array(let list) = alternatives, !list.isEmpty else {
                throw invalid("'\(keyword)' must be a non-empty array of schemas", keyword, path)
            }
            var parts: [String] = []
            for (index, item) in list.enumerated() {
                parts.append(try ruleName(item, path: "\(path)/\(keyword)/\(index)", hint: "\(hint)-\(index)"))
            }
            return alternativesText(parts)
        }
        let declared = try typeList(schema, path: path)
        if schema["enum"] != nil || schema["const"] != nil {
            return try enumeration(schema, types: declared, path: path)
        }
        var kinds = declared ?? []
        if declared == nil {
            let has = { (keys: [String]) in keys.contains { schema[$0] != nil } }
            if has(["properties", "required", "additionalProperties"]) { kinds.append("object") }
            if has(["items", "minItems", "maxItems"]) { kinds.append("array") }
            if has(["minLength", "maxLength"]) { kinds.append("string") }
            if kinds.isEmpty { return use("value") }
        }
        var parts: [String] = []
        for kind in kinds {
            switch kind {
            case "object": parts.append(try objectRule(schema, path: path, hint: hint))
            case "array": parts.append(try arrayRule(schema, path: path, hint: hint))
            case "string": parts.append(try stringExpression(schema, path: path))
            default: parts.append(use(kind))
            }
        }
        return alternativesText(parts)
    }

    /// The name of a rule for `schema` (a shared rule, or a new one named after `hint`).
    mutating func ruleName(_ schema: JSONSchemaValue, path: String, hint: String) throws -> String {
        let body = try expression(schema, path: path, hint: hint)
        if body.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) { return body }
        return define(hint, body)
    }

    private func typeList(_ schema: JSONSchemaValue, path: String) throws -> [String]? {
        guard let type = schema["type"] else { return nil }
        let names: [JSONSchemaValue]
        switch type {
        case .string: names = [type]
        case .array(let list) where !list.isEmpty: names = list
        default: throw invalid("'type' must be a type name or a non-empty array of them", "type", path)
        }
        return try names.map {
            guard case .string(let name) = $0, SchemaConverter.types.contains(name) else {
                throw invalid("unknown type \($0.jsonText); expected one of \(SchemaConverter.types.joined(separator: ", "))",
                              "type", path)
            }
            return name
        }
    }

    private mutating func enumeration(_ schema: JSONSchemaValue, types: [String]?, path: String) throws -> String {
        let keyword = schema["enum"] != nil ? "enum" : "const"
        var values: [JSONSchemaValue]
        if keyword == "enum" {
            guard case .array(let list) = schema["enum"]!, !list.isEmpty else {
                throw invalid("'enum' must be a non-empty array", "enum", path)
            }
            values = list
        } else {
            values = [schema["const"]!]
        }
        if schema["enum"] != nil, let const = schema["const"] { values = values.filter { $0 == const } }
        if let types { values = values.filter { value in types.contains { SchemaConverter.has(value, type: $0) } } }
        guard !values.isEmpty else { throw invalid("no value of '\(keyword)' fits the schema's other keywords", keyword, path) }
        return alternativesText(values.map { JSONGrammarRules.literal($0.jsonText) })
    }

    private static func has(_ value: JSONSchemaValue, type: String) -> Bool {
        switch (value, type) {
        case (.null, "null"), (.bool, "boolean"), (.number, "number"), (.string, "string"),
             (.array, "array"), (.object, "object"): return true
        case (.number(let number), "integer"): return number == number.rounded()
        default: return false
        }
    }

    // MARK: - Strings and arrays

    private mutating func stringExpression(_ schema: JSONSchemaValue, path: String) throws -> String {
        let minimum = try count(schema, "minLength", path: path)
        let maximum = try count(schema, "maxLength", path: path)
        if minimum == nil && maximum == nil { return use("string") }
        if let minimum, let maximum, maximum < minimum {
            throw invalid("'maxLength' is below 'minLength'", "maxLength", path)
        }
        let bounds = "{\(minimum ?? 0),\(maximum.map(String.init) ?? "")}"
        return "\(SchemaConverter.quote) \(use("char"))\(bounds) \(SchemaConverter.quote)"
    }

    private mutating func arrayRule(_ schema: JSONSchemaValue, path: String, hint: String) throws -> String {
        var item = use("value")
        var maximum = try count(schema, "maxItems", path: path)
        let minimum = try count(schema, "minItems", path: path) ?? 0
        switch schema["items"] {
        case nil, .bool(true)?: break
        case .bool(false)?: maximum = 0
        case .object?: item = try ruleName(schema["items"]!, path: "\(path)/items", hint: "\(hint)-item")
        case .array?:
            throw GrammarError(.unsupportedSchema, "'items' as an array (tuple validation) is not supported",
                               keyword: "items", path: path)
        default: throw invalid("'items' must be a schema", "items", path)
        }
        if let maximum, maximum < minimum { throw invalid("'maxItems' is below 'minItems'", "maxItems", path) }
        let separated = "( ws \",\" ws \(item) )"
        let body: String
        if maximum == 0 {
            body = "\"[\" ws \"]\""
        } else {
            let low = max(minimum - 1, 0)
            let repeats = maximum.map { "{\(low),\($0 - 1)}" } ?? (low == 0 ? "*" : "{\(low),}")
            let list = "\(item) \(separated)\(repeats)"
            body = minimum == 0 ? "\"[\" ws ( \(list) ws )? \"]\"" : "\"[\" ws \(list) ws \"]\""
        }
        shared.insert("ws")
        return define(hint, body)
    }

    private func count(_ schema: JSONSchemaValue, _ keyword: String, path: String) throws -> Int? {
        guard let value = schema[keyword] else { return nil }
        guard case .number(let number) = value, number >= 0, number == number.rounded() else {
            throw invalid("'\(keyword)' must be a non-negative integer", keyword, path)
        }
        guard number <= Double(maxRepetitionBound) else {
            throw GrammarError(.unsupportedSchema, "'\(keyword)' above \(maxRepetitionBound) is not supported",
                               keyword: keyword, path: path)
        }
        return Int(number)
    }

    // MARK: - References

    private mutating func referenceRule(_ reference: JSONSchemaValue, path: String) throws -> String {
        guard case .string(let pointer) = reference else { throw invalid("'$ref' must be a string", "$ref", path) }
        if let name = referenceRules[pointer] { return name }
        guard pointer.hasPrefix("#") else {
            throw GrammarError(.unsupportedSchema, "'$ref' to another document (\(pointer)) is not supported; "
                               + "only references within the schema (#/$defs/...) are", keyword: "$ref", path: path)
        }
        var target = document
        for part in pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            let key = part.replacingAll("~1", "/").replacingAll("~0", "~")
            switch target {
            case .object: target = target[key] ?? .null
            case .array(let items): target = Int(key).flatMap { $0 >= 0 && $0 < items.count ? items[$0] : nil } ?? .null
            default: target = .null
            }
            if target == .null { throw invalid("'$ref' points to nothing: \(pointer)", "$ref", path) }
        }
        let last = pointer.split(separator: "/").last.map(String.init) ?? "root"
        let name = reserve("ref-" + last)
        referenceRules[pointer] = name
        let index = rules.count
        rules.append((name, ""))
        rules[index].1 = try expression(target, path: pointer, hint: name)
        return name
    }

    // MARK: - Helpers

    mutating func use(_ name: String) -> String {
        shared.insert(name)
        return name
    }

    /// Defines a new rule named after `hint` and returns its name.
    mutating func define(_ hint: String, _ body: String) -> String {
        let name = reserve(hint)
        rules.append((name, body))
        return name
    }

    /// Defines the rule `name`, reserved before with `reserve`.
    mutating func defineReserved(_ name: String, _ body: String) {
        rules.append((name, body))
    }

    /// A fresh rule name made of `hint`'s letters and digits.
    mutating func reserve(_ hint: String) -> String {
        var base = String(hint.prefix(48).map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "-" })
        while base.contains("--") { base = base.replacingAll("--", "-") }
        if base.isEmpty || base == "-" { base = "rule" }
        var name = base
        var suffix = nextSuffix[base] ?? 2
        while taken.contains(name) {
            name = "\(base)-\(suffix)"
            suffix += 1
        }
        nextSuffix[base] = suffix
        taken.insert(name)
        return name
    }

    mutating func noteShared(_ name: String) { shared.insert(name) }

    func alternativesText(_ parts: [String]) -> String {
        parts.count == 1 ? parts[0] : "( " + parts.joined(separator: " | ") + " )"
    }

    func invalid(_ message: String, _ keyword: String?, _ path: String) -> GrammarError {
        GrammarError(.invalidSchema, message, keyword: keyword, path: path)
    }
}

extension StringProtocol {
    /// The text with every `target` replaced by `replacement` (no Foundation).
    func replacingAll(_ target: String, _ replacement: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            out += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}
