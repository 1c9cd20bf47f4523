import TestSupport
import Foundation
import LlamaServer
import Testing

@Suite("JSONValue")
struct JSONTests {
    @Test("parses every kind of value")
    func parsesValues() throws {
        let value = try JSONValue.parse(#"""
         {"a": [1, -2.5, 3e2, true, false, null], "b": {"c": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"},
          "big": 9223372036854775807, "bigger": 9223372036854775808, "neg0": -0}
        """#)
        #expect(value["a"] == [1, -2.5, 300.0, true, false, nil])
        #expect(value["b"]?["c"] == .string("x\"\\/\u{08}\u{0C}\n\r\té😀"))
        #expect(value["big"] == .integer(Int64.max))
        #expect(value["bigger"] == .number(9223372036854775808.0))
        #expect(value["a"]?[1]?.integerValue == nil)
        #expect(value["a"]?[2]?.integerValue == 300)
    }

    @Test("objects keep their members in the order of the text (a schema's properties decide the generated order)")
    func memberOrder() throws {
        func keys(_ v: JSONValue?) -> [String] {
            if case let .object(members)? = v { return members.map(\.0) }
            return []
        }
        let value = try JSONValue.parse(#"""
            {"zeta": 1, "alpha": {"name": "x", "age": 2, "b": [{"y": 1, "x": 2}]}, "mid": null, "zeta": 3}
            """#)
        #expect(keys(value) == ["zeta", "alpha", "mid"])
        #expect(value["zeta"] == 3, "a repeated key keeps its last value")
        #expect(keys(value["alpha"]) == ["name", "age", "b"])
        #expect(keys(value["alpha"]?["b"]?[0]) == ["y", "x"])
    }

    @Test("serialization writes members in their order, once per key, and escapes what JSON requires")
    func serializationOrder() {
        let value: JSONValue = ["b": 1, "a": ["d": 2.5, "c": [true, nil]], "b": 3]
        #expect(value.serialized == #"{"b":1,"a":{"d":2.5,"c":[true,null]}}"#)
        #expect(JSONValue.string("q\"b\\s/c\u{01}\u{1F}n\nt\té").serialized == #""q\"b\\s/c\u0001\u001fn\nt\té""#)
        #expect(JSONValue.number(.infinity).serialized == "null")
    }

    @Test("serialization round-trips and agrees with Foundation's parser")
    func roundTrip() throws {
        let value: JSONValue = [
            "text": "quote \" backslash \\ newline \n tab \t control \u{01} del \u{7F} é 😀",
            "numbers": [0, -7, 0.1, 1e-7, 123456.789, 1e300],
            "nested": ["empty": [:], "list": []],
            "flags": [true, false, nil],
        ]
        let text = value.serialized
        #expect(try JSONValue.parse(text) == value)
        let foundation = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(foundation?["text"] as? String == "quote \" backslash \\ newline \n tab \t control \u{01} del \u{7F} é 😀")
        let numbers = (foundation?["numbers"] as? [Any])?.compactMap { ($0 as? NSNumber)?.doubleValue }
        #expect(numbers == [0, -7, 0.1, 1e-7, 123456.789, 1e300])
    }

    // Foundation's parser accepts a trailing comma ("[1,]"), which asks for nothing harmful.
    @Test("rejects malformed documents with an error", arguments: [
        "", " ", "{", "{\"a\" 1}", "01", "1.", ".5", "1e", "-", "+1", "tru", "nulll",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\udc00\"", "\"\\ud800x\"", "[1] [2]", "{1: 2}", "\"a\tb\"", "1e400",
    ])
    func rejectsMalformed(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test("rejects invalid UTF-8 and very deep nesting without crashing")
    func hostileInput() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }
        #expect(throws: JSONParseError.self) {
            try JSONValue.parse(String(repeating: "[", count: 1_000_000) + String(repeating: "]", count: 1_000_000))
        }
        let deepButAllowed = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: Never.self) { try JSONValue.parse(deepButAllowed) }
    }
}
