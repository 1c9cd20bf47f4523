/// Protocol-wide constants of the cluster wire format.
public enum WireProtocol {
    /// The protocol version this code speaks; envelopes of any other version are rejected.
    public static let version: UInt32 = 1
}

#if !_endian(little)
#error("The cluster wire format stores raw little-endian payloads; big-endian hosts are not supported.")
#endif

// MARK: - Errors

/// Why a frame could not be decoded into a ``WireMessage``.
///
/// `field` strings name the field as it is spelled in `proto/llama_cluster.proto`.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The frame had no bytes at all.
    case emptyFrame
    /// The bytes are not a valid serialized envelope (protobuf parse failure).
    case undecodable(byteCount: Int)
    /// The envelope's protocol version is not ``WireProtocol/version``.
    case unsupportedProtocolVersion(received: UInt32, supported: UInt32)
    /// The envelope carried no message (or one of a kind this version does not know).
    case missingBody
    /// A string field is not valid UTF-8.
    case invalidUTF8(field: String)
    /// A required sub-message is absent.
    case missingField(String)
    /// An enum field holds a value that is unspecified or unknown.
    case invalidEnumValue(field: String, value: UInt32)
    /// A per-token array has a different length than the frame's token count.
    case countMismatch(field: String, count: Int, expected: Int)
    /// A payload's byte size disagrees with the size its shape implies.
    case dataSizeMismatch(field: String, byteCount: Int, expected: Int)
    /// A field holds a value that is out of range or inconsistent with another field.
    case invalidValue(field: String, reason: String)
    /// A tensor chunk's data does not match its CRC-32C.
    case checksumMismatch(tensor: String, expected: UInt32, computed: UInt32)

    public var description: String {
        switch self {
        case .emptyFrame:
            return "empty frame"
        case .undecodable(let byteCount):
            return "undecodable frame of \(byteCount) bytes (not a serialized Envelope)"
        case .unsupportedProtocolVersion(let received, let supported):
            return "protocol version \(received) received, this build speaks version \(supported)"
        case .missingBody:
            return "envelope carries no message of a known kind"
        case .invalidUTF8(let field):
            return "field \(field) is not valid UTF-8"
        case .missingField(let field):
            return "required field \(field) is missing"
        case .invalidEnumValue(let field, let value):
            return "field \(field) has invalid value \(value)"
        case .countMismatch(let field, let count, let expected):
            return "field \(field) has \(count) entries, expected \(expected)"
        case .dataSizeMismatch(let field, let byteCount, let expected):
            return "field \(field) has \(byteCount) bytes, its shape implies \(expected)"
        case .invalidValue(let field, let reason):
            return "field \(field): \(reason)"
        case .checksumMismatch(let tensor, let expected, let computed):
            return "tensor \(tensor): chunk CRC-32C is \(hex(computed)), frame says \(hex(expected))"
        }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
