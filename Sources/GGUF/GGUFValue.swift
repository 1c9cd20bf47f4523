/// The value types a GGUF metadata entry can hold, with their on-disk ids.
public enum GGUFValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6
    case bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One metadata value. Arrays hold values of one element type, possibly arrays themselves.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String)
    /// An array; `elementType` is kept so that an empty array still round-trips.
    case array(elementType: GGUFValueType, [GGUFValue])
    case uint64(UInt64), int64(Int64), float64(Double)

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// The value as an integer, if it is one of the integer types and fits.
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a float, from either float type or an integer.
    public var float: Float? {
        switch self {
        case .float32(let v): return v
        case .float64(let v): return Float(v)
        default: return int.map(Float.init)
        }
    }

    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var array: [GGUFValue]? { if case .array(_, let a) = self { return a } else { return nil } }

    /// All elements as strings, or nil if this is not an array of strings.
    public var stringArray: [String]? {
        guard let a = array else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a { guard let s = v.string else { return nil }; out.append(s) }
        return out
    }

    /// All elements as floats, or nil if any is not numeric.
    public var floatArray: [Float]? {
        guard let a = array else { return nil }
        var out: [Float] = []
        out.reserveCapacity(a.count)
        for v in a { guard let f = v.float else { return nil }; out.append(f) }
        return out
    }

    /// All elements as integers, or nil if any is not an integer.
    public var intArray: [Int]? {
        guard let a = array else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for v in a { guard let i = v.int else { return nil }; out.append(i) }
        return out
    }
}

extension GGUFValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .uint8(let v): return "\(v)"
        case .int8(let v): return "\(v)"
        case .uint16(let v): return "\(v)"
        case .int16(let v): return "\(v)"
        case .uint32(let v): return "\(v)"
        case .int32(let v): return "\(v)"
        case .uint64(let v): return "\(v)"
        case .int64(let v): return "\(v)"
        case .float32(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        case .string(let s): return s.debugDescription
        case .array(let t, let a):
            let head = a.prefix(8).map(\.description).joined(separator: ", ")
            return a.count > 8 ? "[\(head), … (\(a.count) \(t))]" : "[\(head)]"
        }
    }
}
