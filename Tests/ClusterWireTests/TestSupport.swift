import ClusterWire
import TestSupport
import Testing

// MARK: - Independent protobuf writer

/// A minimal protobuf encoder written from the wire-format specification, used to build frames
/// (valid and deliberately broken ones) independently of the code under test.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func tag(_ field: Int, wireType: Int) {
        varint(UInt64(field << 3 | wireType))
    }

    mutating func uint(_ field: Int, _ value: UInt64) {
        tag(field, wireType: 0)
        varint(value)
    }

    mutating func int32(_ field: Int, _ value: Int32) {
        tag(field, wireType: 0)
        varint(UInt64(bitPattern: Int64(value)))
    }

    mutating func fixed32(_ field: Int, _ value: UInt32) {
        tag(field, wireType: 5)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func fixed64(_ field: Int, _ value: UInt64) {
        tag(field, wireType: 1)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func lengthDelimited(_ field: Int, _ payload: [UInt8]) {
        tag(field, wireType: 2)
        varint(UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    mutating func string(_ field: Int, _ value: String) {
        lengthDelimited(field, Array(value.utf8))
    }

    mutating func message(_ field: Int, _ writer: ProtoWriter) {
        lengthDelimited(field, writer.bytes)
    }

    mutating func packedInt32(_ field: Int, _ values: [Int32]) {
        var payload = ProtoWriter()
        for value in values { payload.varint(UInt64(bitPattern: Int64(value))) }
        lengthDelimited(field, payload.bytes)
    }

    mutating func packedVarints(_ field: Int, _ values: [UInt64]) {
        var payload = ProtoWriter()
        for value in values { payload.varint(value) }
        lengthDelimited(field, payload.bytes)
    }
}

/// Field numbers of `Envelope.body`, from proto/llama_cluster.proto.
enum EnvelopeField {
    static let protocolVersion = 1
    static let activation = 2
    static let join = 3
    static let shardAssignment = 4
    static let ready = 5
    static let heartbeat = 6
    static let sequenceRelease = 7
    static let shutdown = 8
    static let error = 9
    static let weightRequest = 10
    static let tensorChunk = 11
    static let weightsDone = 12
}

/// An envelope around `body` (field `field`) with the given protocol version.
func envelope(version: UInt64 = 1, field: Int, body: ProtoWriter) -> [UInt8] {
    var writer = ProtoWriter()
    if version != 0 { writer.uint(EnvelopeField.protocolVersion, version) }
    writer.message(field, body)
    return writer.bytes
}

/// Half-precision little-endian bytes of `values`, computed with Swift's scalar Float16.
func referenceHalfBytes(_ values: [Float]) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in values {
        let bits = Float16(value).bitPattern
        bytes.append(UInt8(bits & 0xFF))
        bytes.append(UInt8(bits >> 8))
    }
    return bytes
}

/// An activation-frame body built field by field; every argument can be made inconsistent.
func activationBody(
    stepID: UInt64 = 42, nTokens: UInt64, width: UInt64, dtype: UInt64 = 2,
    sequenceIDs: [Int32], positions: [Int32], needLogits: [Bool] = [], data: [UInt8]
) -> ProtoWriter {
    var body = ProtoWriter()
    if stepID != 0 { body.uint(1, stepID) }
    if nTokens != 0 { body.uint(2, nTokens) }
    if width != 0 { body.uint(3, width) }
    if dtype != 0 { body.uint(4, dtype) }
    if !sequenceIDs.isEmpty { body.packedInt32(5, sequenceIDs) }
    if !positions.isEmpty { body.packedInt32(6, positions) }
    if !needLogits.isEmpty { body.packedVarints(7, needLogits.map { $0 ? 1 : 0 }) }
    if !data.isEmpty { body.lengthDelimited(8, data) }
    return body
}

/// Decodes with both the allocating path and a reusable codec, expects them to agree, and
/// returns the outcome.
func decodeBothWays(_ bytes: [UInt8], codec: ActivationCodec) -> Result<WireMessage, Error> {
    let direct: Result<WireMessage, Error> = Result { try WireMessage.decode(bytes) }
    let viaCodec: Result<WireMessage, Error> = Result { try bytes.withUnsafeBytes { try codec.decode($0) } }
    switch (direct, viaCodec) {
    case (.success(let a), .success(let b)):
        // Compare encodings: activation values may hold NaNs, which are never equal.
        #expect(a.encode() == b.encode(), "codec and direct decoding disagree")
    case (.failure(let a), .failure(let b)):
        #expect("\(a)" == "\(b)", "codec and direct decoding fail differently")
    default:
        Issue.record("codec and direct decoding disagree: \(direct) vs \(viaCodec)")
    }
    return direct
}
