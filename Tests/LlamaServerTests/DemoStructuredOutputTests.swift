import Foundation
import LlamaInference
import LlamaServer
import TestSupport
import Testing

/// Structured output through the HTTP endpoint over the demo model: sampled (temperature > 0,
/// many seeds) outputs under `response_format` and `grammar` are parsed by Foundation's JSON
/// decoder and checked by a validator written here, not by the grammar code under test.
@Suite("Structured output on the demo model", .serialized, .timeLimit(.minutes(8)))
struct DemoStructuredOutputTests {
    static let schema = #"""
        {"type": "object",
         "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "age": {"type": "integer"},
            "score": {"type": "number"},
            "happy": {"type": "boolean"},
            "pet": {"enum": ["cat", "dog", null, 3]},
            "color": {"type": "string", "enum": ["red", "green", "blue"]},
            "friends": {"type": "array", "maxItems": 3,
                        "items": {"type": "object",
                                  "properties": {"name": {"type": "string", "maxLength": 8}, "close": {"type": "boolean"},
                                                 "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 2}},
                                  "required": ["name", "close"], "additionalProperties": false}},
            "note": {"type": "null"}
         },
         "required": ["name", "age", "score", "happy", "pet", "friends", "note"],
         "additionalProperties": false}
        """#

    /// `logit_bias` pushing down every token that is only whitespace with a tab or a line
    /// break: the demo model, trained on Python sources, otherwise fills the JSON whitespace the
    /// grammar allows (a line break and up to 20 tabs at each place) and runs out of tokens.
    static func noIndentBias(_ backend: any CompletionBackend) -> String {
        let ids = (0..<Int32(backend.info.vocabularySize)).filter { id in
            let b = backend.piece(id)
            return !b.isEmpty && b.allSatisfy { [0x20, 0x09, 0x0A, 0x0D].contains($0) } && b.contains { $0 != 0x20 }
        }
        return #""logit_bias": {"# + ids.map { "\"\($0)\": -100" }.joined(separator: ", ") + "}"
    }

    /// Runs `requests` requests of `n: 3` choices with seeds 100, 103, ... and returns every
    /// choice's text; unless `allowCut`, each must have ended because the grammar was complete.
    static func sample(_ client: LiveClient, route: String = "/v1/completions", body: String,
                       requests: Int, allowCut: Bool = false) async throws -> [(text: String, stopped: Bool)] {
        var texts: [(String, Bool)] = []
        for r in 0..<requests {
            let reply = try await client.post(route, "{\(body), \"n\": 3, \"seed\": \(100 + 3 * r)}")
            #expect(reply.status == 200, "\(reply.text)")
            guard case let .array(choices)? = reply.json["choices"] else { continue }
            for c in choices {
                let stopped = c["finish_reason"] == "stop"
                if !allowCut { #expect(stopped, "the grammar ends each choice: \(c.serialized)") }
                texts.append((c["text"]?.stringValue ?? c["message"]?["content"]?.stringValue ?? "", stopped))
            }
        }
        return texts
    }

    @Test("response_format json_object: every sampled output that ends is one JSON object")
    func jsonObject() async throws {
        try await withDemoServer { _, client in
            // JSON mode bounds nothing: a string may run to max_tokens. A prompt of JSON lines
            // makes the demo model close its objects; outputs cut by max_tokens must be rare.
            let prompt = #""prompt": "{\"name\": \"Tom\", \"age\": 7}\n{\"name\": \"Ann\", \"age\": 9}\n", "temperature": 0.8, "#
                + #""max_tokens": 300, "response_format": {"type": "json_object"}"#
            var outputs = try await Self.sample(client, body: prompt, requests: 4, allowCut: true)
            outputs += try await Self.sample(client, route: "/v1/chat/completions", body: #"""
                "messages": [{"role": "user", "content": "Write {\"name\": \"Tom\", \"age\": 7} for Ann."}], "temperature": 0.8,
                "max_tokens": 300, "response_format": {"type": "json_object"}
                """#, requests: 2, allowCut: true)
            #expect(outputs.count == 18)
            let ended = outputs.filter(\.stopped)
            #expect(ended.count >= 15, "\(outputs.count - ended.count) of \(outputs.count) outputs were cut by max_tokens")
            for (text, _) in ended {
                let value = try? JSONDecoder().decode(JSONTestValue.self, from: Data(text.utf8))
                guard case .object? = value else {
                    Issue.record("not a JSON object: \(text.debugDescription)")
                    continue
                }
            }
            #expect(Set(ended.map(\.text)).count > 5)
        }
    }

    @Test("response_format json_schema: nested objects, arrays, enum, required, numbers, integers, booleans, null")
    func jsonSchema() async throws {
        let schema = try JSONDecoder().decode(JSONTestValue.self, from: Data(Self.schema.utf8))
        try await withDemoServer { backend, client in
            let format = #""response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": \#(Self.schema)}}, "#
                + Self.noIndentBias(backend)
            var texts = try await Self.sample(client, body: #""prompt": "The girl's card said", "temperature": 1.0, "max_tokens": 400, "#
                                              + format, requests: 5).map(\.text)
            // The same schema through chat, and llama.cpp's json_schema field.
            texts += try await Self.sample(client, route: "/v1/chat/completions", body: #"""
                "messages": [{"role": "user", "content": "Who is Tom?"}], "temperature": 0.9, "max_tokens": 400, \#(format)
                """#, requests: 1).map(\.text)
            texts += try await Self.sample(client, body: #""prompt": "Tom", "temperature": 0.9, "max_tokens": 400, "json_schema": "#
                                           + Self.schema + ", " + Self.noIndentBias(backend), requests: 1).map(\.text)
            #expect(texts.count == 21)
            var seen = Set<String>()
            for text in texts {
                guard let value = try? JSONDecoder().decode(JSONTestValue.self, from: Data(text.utf8)) else {
                    Issue.record("not JSON: \(text.debugDescription)")
                    continue
                }
                if let problem = value.violation(of: schema) { Issue.record("\(problem): \(text)") }
                // Members come in the schema's order: the required ones as `properties` lists
                // them, then the optional one.
                let order = ["name", "age", "score", "happy", "pet", "friends", "note", "color"]
                let at = order.compactMap { text.range(of: "\"\($0)\"")?.lowerBound }
                #expect(at == at.sorted() && at.count >= 7, "members out of the schema's order: \(text)")
                seen.insert(text)
            }
            #expect(seen.count > 10, "sampling with different seeds gives different documents")
        }
    }

    @Test("a GBNF grammar: every sampled output matches it")
    func gbnf() async throws {
        let grammar = #"""
            root ::= sentence ( " and " sentence ){0,2} "." ( " " count )?
            sentence ::= "the " animal " is " color
            animal ::= "cat" | "dog" | "bird" | "big " animal
            color ::= "red" | "blue" | "green"
            count ::= [1-9] [0-9]? " times"
            """#
        let escaped = grammar.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
        let sentence = #"the (big )*(cat|dog|bird) is (red|blue|green)"#
        try await withDemoServer { _, client in
            let pattern = try Regex("\(sentence)( and \(sentence)){0,2}\\.( [1-9][0-9]? times)?")
            let texts = try await Self.sample(client, body: #""prompt": "Sam said:", "temperature": 1.2, "top_k": 0, "top_p": 1, "min_p": 0, "#
                                              + #""max_tokens": 120, "grammar": "\#(escaped)""#, requests: 6).map(\.text)
            #expect(texts.count == 18)
            for text in texts {
                #expect(text.wholeMatch(of: pattern) != nil, "\(text.debugDescription) does not match the grammar")
            }
            #expect(Set(texts).count > 3)
        }
    }
}

// MARK: - JSON values and a validator for the schema keywords used above

/// A JSON document as Foundation's decoder reads it.
indirect enum JSONTestValue: Decodable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONTestValue]), object([String: JSONTestValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONTestValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONTestValue].self)) }
    }

    subscript(_ key: String) -> JSONTestValue? {
        if case let .object(m) = self { return m[key] }
        return nil
    }

    private func isType(_ name: String) -> Bool {
        switch (self, name) {
        case (.null, "null"), (.bool, "boolean"), (.number, "number"), (.string, "string"), (.array, "array"), (.object, "object"):
            return true
        case let (.number(d), "integer"): return d.rounded() == d
        default: return false
        }
    }

    /// The first way `self` breaks `schema` (type, enum, properties, required,
    /// additionalProperties, items, minItems/maxItems, minLength/maxLength), or nil.
    func violation(of schema: JSONTestValue, at path: String = "$") -> String? {
        if case let .string(t)? = schema["type"], !isType(t) { return "\(path) is not of type \(t)" }
        if case let .array(options)? = schema["enum"], !options.contains(self) { return "\(path) is not in the enum" }
        switch self {
        case let .object(members):
            let properties: [String: JSONTestValue]
            if case let .object(p)? = schema["properties"] { properties = p } else { properties = [:] }
            if case let .array(required)? = schema["required"] {
                for case let .string(name) in required where members[name] == nil { return "\(path) lacks \(name)" }
            }
            for (key, member) in members {
                if let sub = properties[key] {
                    if let v = member.violation(of: sub, at: "\(path).\(key)") { return v }
                } else if schema["additionalProperties"] == .bool(false) {
                    return "\(path) has the member \(key) the schema does not allow"
                }
            }
        case let .array(items):
            if case let .number(n)? = schema["minItems"], Double(items.count) < n { return "\(path) has too few items" }
            if case let .number(n)? = schema["maxItems"], Double(items.count) > n { return "\(path) has too many items" }
            if let sub = schema["items"] {
                for (i, item) in items.enumerated() { if let v = item.violation(of: sub, at: "\(path)[\(i)]") { return v } }
            }
        case let .string(s):
            if case let .number(n)? = schema["minLength"], Double(s.unicodeScalars.count) < n { return "\(path) is too short" }
            if case let .number(n)? = schema["maxLength"], Double(s.unicodeScalars.count) > n { return "\(path) is too long" }
        default:
            break
        }
        return nil
    }
}
