import Foundation
import LlamaGrammar
import Testing

// MARK: - Sampling JSON with random logits over the real vocabulary

/// Schemas with nested objects in arrays in objects, enums, integers, optional
/// properties, anyOf/oneOf, references and recursion.
enum SampleSchemas {
    static let all: [(String, String)] = [
        ("person", """
            {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 24},
                "age": {"type": "integer"},
                "email": {"type": "string", "description": "optional"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 4},
                "address": {"type": "object", "properties": {
                    "street": {"type": "string", "maxLength": 30}, "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "minLength": 5, "maxLength": 5}},
                  "required": ["street", "city"], "additionalProperties": false}},
             "required": ["name", "age", "address"], "additionalProperties": false}
            """),
        ("order", """
            {"$defs": {"customer": {"type": "object", "properties": {
                 "name": {"type": "string", "maxLength": 16}, "vip": {"type": "boolean"}},
                 "required": ["name"], "additionalProperties": false}},
             "type": "object", "properties": {
                "id": {"type": "integer"},
                "status": {"enum": ["open", "shipped", "closed"]},
                "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
                    "type": "object", "properties": {
                        "sku": {"type": "string", "maxLength": 8}, "qty": {"type": "integer"},
                        "price": {"type": "number"}, "gift": {"type": "boolean"}},
                    "required": ["sku", "qty", "price"], "additionalProperties": false}},
                "customer": {"anyOf": [{"$ref": "#/$defs/customer"}, {"type": "null"}]},
                "note": {"type": ["string", "null"], "maxLength": 30}},
             "required": ["id", "status", "items", "customer"], "additionalProperties": false}
            """),
        ("tree", """
            {"$ref": "#/definitions/node", "definitions": {"node": {"type": "object", "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#/definitions/node"}}},
             "required": ["value", "children"], "additionalProperties": false}}}
            """),
        ("matrix", """
            {"type": "object", "properties": {
                "rows": {"type": "array", "minItems": 1, "maxItems": 3,
                         "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}},
                "shape": {"oneOf": [{"const": "square"}, {"enum": [1, 2.5, true, null]}]},
                "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}},
             "required": ["rows", "shape"]}
            """),
        ("counters", """
            {"type": "object", "properties": {"kind": {"const": "metrics"}}, "required": ["kind"],
             "additionalProperties": {"type": "integer"}}
            """),
        ("optional-only", """
            {"type": "object", "properties": {
                "a": {"type": "string", "maxLength": 5}, "b": {"type": "integer"}, "c": {"type": "boolean"}},
             "additionalProperties": false}
            """),
    ]
}

@Suite("Sampling JSON with random logits")
struct JSONSamplingTests {
    static let outputs = 200
    static let cap = 400

    /// Samples outputs and checks that each one that ended parses with JSONSerialization
    /// and satisfies `schema`; returns how many ended.
    private func sampleAndCheck(_ grammar: Grammar, schema: JSONSchemaValue?, seed: UInt64) -> Int {
        var sampler = RandomSampler(seed: seed)
        var ended = 0
        for _ in 0..<JSONSamplingTests.outputs {
            let output = sampler.sample(grammar, cap: JSONSamplingTests.cap)
            #expect(!output.deadEnd, "no token was allowed after \(output.text)")
            guard output.canEnd else { continue }  // stopped by the cap mid-document
            ended += 1
            let parsed = try? JSONSerialization.jsonObject(with: Data(output.bytes), options: [.fragmentsAllowed])
            #expect(parsed is [String: Any], "JSONSerialization rejects \(output.text)")
            guard let value = try? JSONSchemaValue(json: output.text) else {
                Issue.record("not JSON: \(output.text)")
                continue
            }
            guard case .object = value else {
                Issue.record("not an object: \(output.text)")
                continue
            }
            if let schema {
                let problem = schemaViolation(value, schema, root: schema)
                #expect(problem == nil, "\(problem ?? ""): \(output.text)")
            }
        }
        return ended
    }

    @Test("json_object outputs are JSON objects")
    func jsonObject() throws {
        let grammar = try Grammar(gbnf: Grammar.jsonObjectGBNF)
        let ended = sampleAndCheck(grammar, schema: nil, seed: 1)
        #expect(ended >= JSONSamplingTests.outputs / 2, "only \(ended) outputs ended within the cap")
    }

    @Test("schema outputs validate", arguments: SampleSchemas.all.map(\.0))
    func schema(name: String) throws {
        let text = SampleSchemas.all.first { $0.0 == name }!.1
        let schema = try JSONSchemaValue(json: text)
        let grammar = try Grammar(jsonSchema: schema)
        let ended = sampleAndCheck(grammar, schema: schema, seed: UInt64(name.utf8.count) * 7919)
        #expect(ended >= JSONSamplingTests.outputs / 2, "only \(ended) outputs ended within the cap")
    }
}
