import LlamaGrammar
import Testing

// MARK: - JSON Schema conversion

@Suite("JSON Schema conversion")
struct JSONSchemaTests {
    private func grammar(_ schema: String) throws -> Grammar {
        try Grammar(jsonSchema: try JSONSchemaValue(json: schema))
    }

    private func conversionError(_ schema: String) throws -> GrammarError? {
        do {
            _ = try Grammar.gbnf(jsonSchema: try JSONSchemaValue(json: schema))
            return nil
        } catch let error as GrammarError {
            return error
        }
    }

    static let unsupported: [(String, String, String)] = [
        (#"{"type": "string", "pattern": "^a+$"}"#, "pattern", "#"),
        (#"{"type": "string", "format": "date"}"#, "format", "#"),
        (##"{"properties": {"n": {"type": "number", "minimum": 0}}}"##, "minimum", "#/properties/n"),
        (##"{"properties": {"n": {"type": "integer", "maximum": 9}}}"##, "maximum", "#/properties/n"),
        (#"{"type": "object", "patternProperties": {"^x": {}}}"#, "patternProperties", "#"),
        (#"{"allOf": [{"type": "string"}]}"#, "allOf", "#"),
        (#"{"not": {"type": "string"}}"#, "not", "#"),
        (#"{"if": {"type": "string"}, "then": {}}"#, "if", "#"),
        (#"{"type": "array", "uniqueItems": true}"#, "uniqueItems", "#"),
        (##"{"type": "array", "items": {"properties": {"a/b": {"multipleOf": 2}}}}"##, "multipleOf", "#/items/properties/a~1b"),
        (#"{"type": "array", "prefixItems": [{}]}"#, "prefixItems", "#"),
        (##"{"$defs": {"x": {"type": "number", "exclusiveMinimum": 1}}, "$ref": "#/$defs/x"}"##, "exclusiveMinimum", "#/$defs/x"),
        (##"{"anyOf": [{"type": "string"}, {"type": "object", "minProperties": 1}]}"##, "minProperties", "#/anyOf/1"),
        (#"{"type": "array", "items": [{"type": "string"}]}"#, "items", "#"),
        (#"{"$ref": "other.json#/x"}"#, "$ref", "#"),
        (##"{"$ref": "#/$defs/x", "type": "object", "$defs": {"x": {}}}"##, "type", "#"),
        (#"{"type": "string", "maxLength": 20000}"#, "maxLength", "#"),
    ]

    @Test("unsupported keywords are errors naming the keyword and where", arguments: 0..<unsupported.count)
    func unsupportedKeyword(_ index: Int) throws {
        let (schema, keyword, path) = JSONSchemaTests.unsupported[index]
        let error = try #require(try conversionError(schema))
        #expect(error.kind == .unsupportedSchema, "\(error)")
        #expect(error.keyword == keyword, "\(error)")
        #expect(error.path == path, "\(error)")
        #expect(error.description.contains(keyword) && error.description.contains(path), "\(error)")
    }

    @Test("malformed schemas are errors")
    func invalidSchemas() throws {
        let cases: [(String, String?)] = [
            (#"{"type": "text"}"#, "type"), (#"{"required": "a"}"#, "required"),
            (##"{"$ref": "#/$defs/missing"}"##, "$ref"), (##"{"enum": []}"##, "enum"),
            (#"{"type": "integer", "enum": ["a"]}"#, "enum"), (#"{"minItems": -1}"#, "minItems"),
            (#"{"minLength": 3, "maxLength": 2}"#, "maxLength"), (#"{"anyOf": {}}"#, "anyOf"),
            (##"{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}"##, "$ref"),
            (#"{"type": "object", "required": ["x"], "additionalProperties": false}"#, "required"),
            ("false", nil), ("3", nil),
        ]
        for (schema, keyword) in cases {
            let error = try conversionError(schema)
            #expect(error?.kind == .invalidSchema, "\(schema): \(String(describing: error))")
            #expect(error?.keyword == keyword, "\(schema): \(String(describing: error))")
        }
        #expect(throws: GrammarError.self) { try JSONSchemaValue(json: #"{"a": }"#) }
    }

    @Test("supported keywords are listed")
    func keywordList() {
        for keyword in ["type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                        "enum", "const", "anyOf", "oneOf", "$ref", "minLength", "maxLength", "title", "description",
                        "$schema", "$id", "examples", "default", "$comment"] {
            #expect(Grammar.supportedSchemaKeywords.contains(keyword), "\(keyword)")
        }
        #expect(!Grammar.supportedSchemaKeywords.contains("pattern"))
    }

    @Test("objects: required in order, optional after, additional properties")
    func objects() throws {
        let closed = try grammar(#"""
            {"type": "object", "title": "T", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
             "c": {"type": "boolean"}}, "required": ["a"], "additionalProperties": false}
            """#)
        for text in [#"{"a":1}"#, #"{"a":1,"b":"x"}"#, #"{"a":1,"c":true}"#, #"{"a": -2, "b": "", "c": false}"#,
                     "{\n  \"a\": 1,\n  \"b\": \"x\"\n}"] {
            #expect(matches(closed, text), "\(text)")
        }
        for text in [#"{}"#, #"{"b":"x","a":1}"#, #"{"a":1.5}"#, #"{"a":1,"d":2}"#, #"{"a":1,"c":true,"b":"x"}"#,
                     #"{"a":"1"}"#, #"{"a":1,"b":"x","b":"y"}"#] {
            #expect(!matches(closed, text), "\(text)")
        }
        let open = try grammar(#"{"properties": {"name": {"type": "string"}}, "required": ["name"]}"#)
        #expect(matches(open, #"{"name":"x","extra":[1,{"y":null}],"nam":1,"names":2}"#))
        #expect(!matches(open, #"{"name":"x","name":3}"#))  // an additional key may not repeat a property
        let typed = try grammar(#"{"type": "object", "additionalProperties": {"type": "integer"}}"#)
        #expect(matches(typed, #"{}"#) && matches(typed, #"{"a":1,"b":2}"#))
        #expect(!matches(typed, #"{"a":"x"}"#))
        let optional = try grammar(#"{"type": "object", "properties": {"x": {}, "y": {}}, "additionalProperties": false}"#)
        for text in [#"{}"#, #"{"x":1}"#, #"{"y":[]}"#, #"{"x":1,"y":2}"#] { #expect(matches(optional, text), "\(text)") }
        #expect(!matches(optional, #"{"y":1,"x":2}"#) && !matches(optional, #"{,"y":1}"#))
    }

    @Test("arrays, strings, numbers, enums, const, type lists, anyOf, refs")
    func values() throws {
        let array = try grammar(#"{"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}"#)
        #expect(matches(array, "[1]") && matches(array, "[1, 2,3]") && matches(array, "[ 1 ]"))
        #expect(!matches(array, "[]") && !matches(array, "[1,2,3,4]") && !matches(array, "[1.0]"))
        let string = try grammar(#"{"type": "string", "minLength": 2, "maxLength": 3}"#)
        #expect(matches(string, #""ab""#) && matches(string, #""a\nb""#) && matches(string, #""日本語""#))
        #expect(!matches(string, #""a""#) && !matches(string, #""abcd""#))
        let number = try grammar(#"{"type": "number"}"#)
        for text in ["0", "-0", "12.5", "1e5", "-3.25E-12"] { #expect(matches(number, text), "\(text)") }
        for text in ["01", "1.", ".5", "+1", "1e", "NaN"] { #expect(!matches(number, text), "\(text)") }
        let choice = try grammar(#"{"enum": ["red", 2, 2.5, true, null, {"a": [1]}]}"#)
        for text in [#""red""#, "2", "2.5", "true", "null", #"{"a":[1]}"#] { #expect(matches(choice, text), "\(text)") }
        #expect(!matches(choice, #""blue""#) && !matches(choice, "false"))
        let constant = try grammar(#"{"const": "on"}"#)
        #expect(matches(constant, #""on""#) && !matches(constant, #""off""#))
        let nullable = try grammar(#"{"type": ["integer", "null"]}"#)
        #expect(matches(nullable, "3") && matches(nullable, "null") && !matches(nullable, #""3""#))
        let either = try grammar(#"{"anyOf": [{"type": "boolean"}, {"type": "array", "maxItems": 0}]}"#)
        #expect(matches(either, "false") && matches(either, "[]") && !matches(either, "[1]"))
        let tree = try grammar(#"""
            {"$defs": {"t": {"type": "object", "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/t"}}},
             "required": ["c"], "additionalProperties": false}}, "$ref": "#/$defs/t"}
            """#)
        #expect(matches(tree, #"{"c":[{"c":[]},{"c":[{"c":[]}]}]}"#) && !matches(tree, #"{"c":[{}]}"#))
        let any = try grammar("{}")
        #expect(matches(any, "[1, \"x\"]") && matches(any, "null"))
    }

    @Test("JSON values parse with key order and compare by hand")
    func schemaValues() throws {
        let value = try JSONSchemaValue(json: #" {"b": [1, 2.5, "x\u00e9\ud83d\ude00"], "a": {"n": null, "t": true}} "#)
        #expect(value == .object([("b", .array([.number(1), .number(2.5), .string("xé😀")])),
                                  ("a", .object([("n", .null), ("t", .bool(true))]))]))
        #expect(value != .object([("a", .object([("n", .null), ("t", .bool(true))])),
                                  ("b", .array([.number(1), .number(2.5), .string("xé😀")]))]))
        #expect(value.jsonText == #"{"b":[1,2.5,"xé😀"],"a":{"n":null,"t":true}}"#)
        for bad in ["", "{", "[1,]", "01", #""\ud800""#, "tru", "{\"a\" 1}", "1 2"] {
            #expect(throws: GrammarError.self, "\(bad)") { try JSONSchemaValue(json: bad) }
        }
    }
}
