import Foundation
import LlamaGrammar

// MARK: - Value

/// A JSON value as the endpoint reads requests and writes responses.
///
/// Objects keep their keys in insertion order, so responses come out in a stable,
/// readable order. Integers without fraction or exponent that fit in 64 bits are kept
/// exact in ``integer(_:)``; every other number is a ``number(_:)``.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.integer(a), .number(b)), let (.number(b), .integer(a)): return Double(a) == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            // Members are unordered: equal when each key has an equal value on both sides.
            guard a.count == b.count else { return false }
            return a.allSatisfy { member in b.contains { $0.0 == member.0 && $0.1 == member.1 } }
        default: return false
        }
    }

    /// The value stored under `key` if this is an object holding it (the last one if repeated).
    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    /// The element at `index` if this is an array that long.
    public subscript(index: Int) -> JSONValue? {
        guard case let .array(elements) = self, elements.indices.contains(index) else { return nil }
        return elements[index]
    }

    /// The number as a `Double`, for integers and numbers.
    public var doubleValue: Double? {
        switch self {
        case let .integer(value): return Double(value)
        case let .number(value): return value
        default: return nil
        }
    }

    /// The number as an `Int64` if it is integral (`16` or `16.0`) and in range.
    public var integerValue: Int64? {
        switch self {
        case let .integer(value):
            return value
        case let .number(value):
            guard value.rounded() == value, abs(value) < 9.0e18 else { return nil }
            return Int64(value)
        default:
            return nil
        }
    }

    /// The string, if this is one.
    public var stringValue: String? {
        if case let .string(value) = self { return value }
        return nil
    }

    /// A short name of the JSON type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer, .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

// MARK: - Parsing and writing (Foundation's JSONSerialization)

/// Why a byte sequence is not a JSON document.
public struct JSONParseError: Error, Equatable, CustomStringConvertible {
    /// What was wrong, as the parser said it.
    public var reason: String

    public var description: String { reason }
}

extension JSONValue {
    /// Parses one JSON document (RFC 8259) with JSONSerialization, which limits nesting (512
    /// levels) so hostile input cannot exhaust the stack.
    /// - Throws: ``JSONParseError`` with the parser's description of the problem.
    public static func parse<Bytes: Collection>(_ bytes: Bytes) throws -> JSONValue where Bytes.Element == UInt8 {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
            throw JSONParseError(reason: detail ?? "not valid JSON")
        }
        // JSONSerialization has checked the text; the order of object members (which decides
        // the order of a schema's generated members) comes from a second, order-keeping parse.
        let order = try? JSONSchemaValue(json: String(decoding: bytes, as: UTF8.self))
        return try JSONValue(foundation: object, order: order)
    }

    /// Parses one JSON document from text.
    public static func parse(_ text: String) throws -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// The value of a JSONSerialization result; objects take their members in the order of
    /// `order` (the same document parsed keeping key order), else sorted by key.
    init(foundation object: Any, order: JSONSchemaValue? = nil) throws {
        switch object {
        case is NSNull:
            self = .null
        case let s as String:
            self = .string(s)
        case let n as NSNumber:
            // JSONSerialization gives booleans as NSNumber of type "c".
            let type = String(cString: n.objCType)
            if type == "c" {
                self = .bool(n.boolValue)
            } else if type == "d" || type == "f" {
                self = .number(n.doubleValue)
            } else if type == "Q" {
                self = n.uint64Value <= UInt64(Int64.max) ? .integer(Int64(n.uint64Value)) : .number(n.doubleValue)
            } else {
                self = .integer(n.int64Value)
            }
        case let a as [Any]:
            var orderedItems: [JSONSchemaValue] = []
            if case let .array(items)? = order, items.count == a.count { orderedItems = items }
            self = .array(try a.enumerated().map { i, v in
                try JSONValue(foundation: v, order: orderedItems.isEmpty ? nil : orderedItems[i])
            })
        case let d as [String: Any]:
            var rank: [String: Int] = [:], orderedValues: [String: JSONSchemaValue] = [:]
            if case let .object(members)? = order {
                for (i, m) in members.enumerated() {
                    if rank[m.0] == nil { rank[m.0] = i }
                    // A repeated key's value is the last one, as JSONSerialization keeps it.
                    orderedValues[m.0] = m.1
                }
            }
            let keys = d.keys.sorted { (rank[$0] ?? Int.max, $0) < (rank[$1] ?? Int.max, $1) }
            self = .object(try keys.map { ($0, try JSONValue(foundation: d[$0]!, order: orderedValues[$0])) })
        default:
            throw JSONParseError(reason: "unexpected value \(type(of: object))")
        }
    }

    /// The compact JSON text of this value, members in their order (a repeated key is written
    /// once, with its first value). Non-finite numbers are written as `null`.
    public var serialized: String {
        var out = ""
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .integer(i): out += String(i)
        case let .number(d): out += d.isFinite ? "\(d)" : "null"
        case let .string(text): Self.write(string: text, to: &out)
        case let .array(elements):
            out += "["
            for (i, e) in elements.enumerated() {
                if i > 0 { out += "," }
                e.write(to: &out)
            }
            out += "]"
        case let .object(members):
            out += "{"
            var seen = Set<String>()
            for (key, value) in members where seen.insert(key).inserted {
                if seen.count > 1 { out += "," }
                Self.write(string: key, to: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    /// `text` as a JSON string (the grammar module's quoting, which schemas use too).
    private static func write(string text: String, to out: inout String) {
        out += JSONSchemaValue.quoted(text)
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements) }
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue {
    /// A JSON string, or `null` for `nil`.
    public init(_ value: String?) { self = value.map { .string($0) } ?? .null }
    /// A JSON integer.
    public init(_ value: Int) { self = .integer(Int64(value)) }
    /// A JSON number, or `null` if not finite.
    public init(_ value: Double) { self = value.isFinite ? .number(value) : .null }
}
