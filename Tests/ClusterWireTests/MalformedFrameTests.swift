import TestSupport
import ClusterWire
import Testing

/// Expects decoding `bytes` to fail with exactly `expected`, through both decoding paths.
func expectRejected(_ bytes: [UInt8], _ expected: WireError, sourceLocation: SourceLocation = #_sourceLocation) {
    let codec = ActivationCodec(initialArenaBytes: 0)
    switch decodeBothWays(bytes, codec: codec) {
    case .success(let message):
        Issue.record("decoded \(message.kind), expected \(expected)", sourceLocation: sourceLocation)
    case .failure(let error):
        #expect(error as? WireError == expected, sourceLocation: sourceLocation)
    }
}

@Suite("Malformed frames")
struct MalformedFrameTests {
    static let goodValues: [Float] = [1, 2, 3, 4, 5, 6]

    @Test("empty and garbage frames")
    func garbage() {
        expectRejected([], .emptyFrame)
        expectRejected([0xFF], .undecodable(byteCount: 1))
        expectRejected([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], .undecodable(byteCount: 11))
        expectRejected(Array("GET / HTTP/1.1\r\n\r\n".utf8), .undecodable(byteCount: 18))
        // Wire type 7 does not exist.
        expectRejected([0x0F, 0x01], .undecodable(byteCount: 2))
        // A length prefix running past the end.
        expectRejected([0x08, 0x01, 0x12, 0x7F, 0x00], .undecodable(byteCount: 5))
    }

    @Test("wrong protocol versions")
    func wrongVersion() {
        let body = activationBody(nTokens: 1, width: 2, sequenceIDs: [0], positions: [0], data: referenceHalfBytes([1, 2]))
        expectRejected(envelope(version: 2, field: EnvelopeField.activation, body: body),
                       .unsupportedProtocolVersion(received: 2, supported: 1))
        expectRejected(envelope(version: 0, field: EnvelopeField.activation, body: body),
                       .unsupportedProtocolVersion(received: 0, supported: 1))
        expectRejected(envelope(version: 0xFFFF_FFFF, field: EnvelopeField.activation, body: body),
                       .unsupportedProtocolVersion(received: 0xFFFF_FFFF, supported: 1))
        var shutdown = ProtoWriter()
        shutdown.string(1, "x")
        expectRejected(envelope(version: 3, field: EnvelopeField.shutdown, body: shutdown),
                       .unsupportedProtocolVersion(received: 3, supported: 1))
    }

    @Test("an envelope without a message, or with an unknown one")
    func missingBody() {
        var writer = ProtoWriter()
        writer.uint(EnvelopeField.protocolVersion, 1)
        expectRejected(writer.bytes, .missingBody)
        writer.string(99, "a message kind from the future")
        expectRejected(writer.bytes, .missingBody)
    }

    @Test("activation sizes that disagree")
    func activationSizesDisagree() {
        let halves = referenceHalfBytes(Self.goodValues)
        func frame(_ body: ProtoWriter) -> [UInt8] { envelope(field: EnvelopeField.activation, body: body) }

        // The consistent frame is accepted (so the rejections below are caused by the one change each makes).
        #expect(throws: Never.self) {
            try WireMessage.decode(frame(activationBody(nTokens: 2, width: 3, sequenceIDs: [0, 1], positions: [5, 6], data: halves)))
        }
        expectRejected(frame(activationBody(nTokens: 2, width: 3, sequenceIDs: [0, 1], positions: [5, 6], data: Array(halves.dropLast()))),
                       .dataSizeMismatch(field: "activation.data", byteCount: 11, expected: 12))
        expectRejected(frame(activationBody(nTokens: 2, width: 3, dtype: 1, sequenceIDs: [0, 1], positions: [5, 6], data: halves)),
                       .dataSizeMismatch(field: "activation.data", byteCount: 12, expected: 24))
        expectRejected(frame(activationBody(nTokens: 3, width: 3, sequenceIDs: [0, 1, 2], positions: [5, 6, 7], data: halves)),
                       .dataSizeMismatch(field: "activation.data", byteCount: 12, expected: 18))
        expectRejected(frame(activationBody(nTokens: 2, width: 3, sequenceIDs: [0], positions: [5, 6], data: halves)),
                       .countMismatch(field: "activation.sequence_ids", count: 1, expected: 2))
        expectRejected(frame(activationBody(nTokens: 2, width: 3, sequenceIDs: [0, 1], positions: [5, 6, 7], data: halves)),
                       .countMismatch(field: "activation.positions", count: 3, expected: 2))
        expectRejected(frame(activationBody(nTokens: 2, width: 3, sequenceIDs: [0, 1], positions: [5, 6], needLogits: [true], data: halves)),
                       .countMismatch(field: "activation.need_logits", count: 1, expected: 2))
        expectRejected(frame(activationBody(nTokens: 0, width: 3, sequenceIDs: [], positions: [], data: halves)),
                       .invalidValue(field: "activation.n_tokens", reason: "a frame carries at least one token"))
        expectRejected(frame(activationBody(nTokens: 2, width: 0, sequenceIDs: [0, 1], positions: [5, 6], data: halves)),
                       .invalidValue(field: "activation.width", reason: "must be positive"))
        expectRejected(frame(activationBody(nTokens: 2, width: 3, dtype: 0, sequenceIDs: [0, 1], positions: [5, 6], data: halves)),
                       .invalidEnumValue(field: "activation.dtype", value: 0))
        expectRejected(frame(activationBody(nTokens: 2, width: 3, dtype: 9, sequenceIDs: [0, 1], positions: [5, 6], data: halves)),
                       .invalidEnumValue(field: "activation.dtype", value: 9))
        // Shape claims 2^32-1 tokens: rejected by the counts before anything is sized by it.
        expectRejected(frame(activationBody(nTokens: 0xFFFF_FFFF, width: 0xFFFF_FFFF, sequenceIDs: [0], positions: [0], data: halves)),
                       .countMismatch(field: "activation.sequence_ids", count: 1, expected: 0xFFFF_FFFF))
        // Shape claims a width of 2^32-1: rejected by the size check without allocating 8 GiB.
        expectRejected(frame(activationBody(nTokens: 1, width: 0xFFFF_FFFF, sequenceIDs: [0], positions: [0], data: halves)),
                       .dataSizeMismatch(field: "activation.data", byteCount: 12, expected: 8_589_934_590))
    }

    @Test("an inconsistent frame encoded from Swift is rejected by the receiver")
    func inconsistentSwiftFrame() throws {
        var frame = ActivationFrame(stepID: 1, width: 4, dtype: .f16, sequenceIDs: [1, 2], positions: [0, 0], values: [1, 2, 3, 4, 5, 6, 7])
        #expect(throws: WireError.countMismatch(field: "values", count: 7, expected: 8)) { try frame.validate() }
        expectRejected(WireMessage.activation(frame).encode(), .dataSizeMismatch(field: "activation.data", byteCount: 14, expected: 16))
        frame.values.append(8)
        try frame.validate()
        frame.positions = [0]
        #expect(throws: WireError.countMismatch(field: "positions", count: 1, expected: 2)) { try frame.validate() }
        expectRejected(WireMessage.activation(frame).encode(), .countMismatch(field: "activation.positions", count: 1, expected: 2))
    }

    @Test("control messages with invalid fields")
    func invalidControlMessages() {
        var ready = ProtoWriter()
        ready.uint(1, 5)
        ready.uint(2, 5)
        expectRejected(envelope(field: EnvelopeField.ready, body: ready),
                       .invalidValue(field: "layer_end", reason: "layer range 5..<5 is empty or reversed"))

        func endpoint(_ address: String, mode: UInt64) -> ProtoWriter {
            var writer = ProtoWriter()
            if !address.isEmpty { writer.string(1, address) }
            if mode != 0 { writer.uint(2, mode) }
            return writer
        }
        func assignment(dtype: UInt64 = 2, kvCache: UInt64 = 0, input: ProtoWriter?, output: ProtoWriter?) -> [UInt8] {
            var writer = ProtoWriter()
            writer.uint(2, 8)
            writer.uint(4, dtype)
            if kvCache != 0 { writer.uint(13, kvCache) }
            if let input { writer.message(7, input) }
            if let output { writer.message(8, output) }
            return envelope(field: EnvelopeField.shardAssignment, body: writer)
        }
        let good = endpoint("tcp://127.0.0.1:1", mode: 1)
        #expect(throws: Never.self) { try WireMessage.decode(assignment(input: good, output: good)) }
        expectRejected(assignment(input: nil, output: good), .missingField("shard_assignment.input"))
        expectRejected(assignment(input: good, output: nil), .missingField("shard_assignment.output"))
        expectRejected(assignment(input: good, output: endpoint("", mode: 2)), .missingField("shard_assignment.output.address"))
        expectRejected(assignment(input: endpoint("tcp://x:1", mode: 0), output: good),
                       .invalidEnumValue(field: "shard_assignment.input.mode", value: 0))
        expectRejected(assignment(dtype: 0, input: good, output: good),
                       .invalidEnumValue(field: "shard_assignment.activation_dtype", value: 0))
        #expect(throws: Never.self) { try WireMessage.decode(assignment(kvCache: 1, input: good, output: good)) }
        expectRejected(assignment(kvCache: 2, input: good, output: good),
                       .invalidEnumValue(field: "shard_assignment.kv_cache_dtype", value: 2))

        var shutdown = ProtoWriter()
        shutdown.lengthDelimited(1, [0x61, 0xC3, 0x28])  // invalid UTF-8 sequence
        expectRejected(envelope(field: EnvelopeField.shutdown, body: shutdown), .invalidUTF8(field: "shutdown.reason"))
    }

    @Test("tensor chunks that are corrupt or out of range")
    func badTensorChunks() {
        func chunk(name: String = "t", offset: UInt64, total: UInt64, data: [UInt8], crc: UInt32) -> [UInt8] {
            var writer = ProtoWriter()
            if !name.isEmpty { writer.string(1, name) }
            if offset != 0 { writer.uint(4, offset) }
            if total != 0 { writer.uint(5, total) }
            if !data.isEmpty { writer.lengthDelimited(6, data) }
            if crc != 0 { writer.fixed32(7, crc) }
            return envelope(field: EnvelopeField.tensorChunk, body: writer)
        }
        let data = Array("123456789".utf8)
        #expect(throws: Never.self) { try WireMessage.decode(chunk(offset: 1, total: 10, data: data, crc: 0xE306_9283)) }
        expectRejected(chunk(offset: 1, total: 10, data: data, crc: 0xE306_9282),
                       .checksumMismatch(tensor: "t", expected: 0xE306_9282, computed: 0xE306_9283))
        expectRejected(chunk(offset: 2, total: 10, data: data, crc: 0xE306_9283),
                       .invalidValue(field: "tensor_chunk.offset", reason: "chunk of 9 bytes at offset 2 exceeds the tensor's 10 bytes"))
        expectRejected(chunk(offset: UInt64.max - 3, total: 10, data: data, crc: 0xE306_9283),
                       .invalidValue(field: "tensor_chunk.offset", reason: "chunk of 9 bytes at offset \(UInt64.max - 3) exceeds the tensor's 10 bytes"))
        expectRejected(chunk(name: "", offset: 0, total: 10, data: data, crc: 0xE306_9283), .missingField("tensor_chunk.tensor_name"))
    }

    @Test("every truncation of every sample frame is rejected")
    func truncatedFrames() {
        let codec = ActivationCodec(initialArenaBytes: 0)
        for message in sampleMessages() {
            let bytes = message.encode()
            for length in 0..<bytes.count {
                let result = decodeBothWays(Array(bytes.prefix(length)), codec: codec)
                if case .success(let decoded) = result {
                    Issue.record("\(message.kind) truncated to \(length) of \(bytes.count) bytes decoded as \(decoded.kind)")
                }
                if case .failure(let error) = result, !(error is WireError) {
                    Issue.record("unexpected error type \(type(of: error))")
                }
            }
        }
    }

    @Test("10,000 random byte strings decode to an error or a valid message")
    func randomBytes() throws {
        var generator = SeededGenerator(seed: 0xC0FFEE)
        let codec = ActivationCodec(initialArenaBytes: 1024)
        var decodedCount = 0
        for _ in 0..<10_000 {
            let length = Int.random(in: 0...200, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Half of the strings start like a real envelope, so parsing gets past the first bytes.
            if Bool.random(using: &generator) && bytes.count > 4 {
                bytes[0] = 0x08
                bytes[1] = 0x01
                bytes[2] = UInt8(Int.random(in: 2...12, using: &generator) << 3 | 2)
            }
            try checkDecodesOrFails(bytes, codec: codec, decodedCount: &decodedCount)
        }
        #expect(decodedCount < 10_000)
    }

    @Test("10,000 random mutations of valid frames decode to an error or a valid message")
    func mutatedFrames() throws {
        var generator = SeededGenerator(seed: 0xBADF00D)
        let codec = ActivationCodec(initialArenaBytes: 1024)
        let originals = sampleMessages().map { $0.encode() }
        var decodedCount = 0
        for _ in 0..<10_000 {
            var bytes = originals[Int.random(in: 0..<originals.count, using: &generator)]
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                guard !bytes.isEmpty else { break }
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<4, using: &generator) {
                case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                case 1: bytes[index] ^= UInt8(1) << UInt8.random(in: 0...7, using: &generator)
                case 2: bytes.remove(at: index)
                default: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: index)
                }
            }
            try checkDecodesOrFails(bytes, codec: codec, decodedCount: &decodedCount)
        }
        // Many mutations hit payload bytes and still decode; many break the framing.
        #expect(decodedCount > 0 && decodedCount < 10_000)
    }

    /// A decode either throws a WireError, or yields a message that re-encodes to a frame
    /// decoding to the same message.
    private func checkDecodesOrFails(_ bytes: [UInt8], codec: ActivationCodec, decodedCount: inout Int) throws {
        switch decodeBothWays(bytes, codec: codec) {
        case .failure(let error):
            #expect(error is WireError, "unexpected error type \(type(of: error))")
        case .success(let message):
            decodedCount += 1
            if case .activation(let frame) = message {
                #expect(throws: Never.self) { try frame.validate() }
            }
            let again = try WireMessage.decode(message.encode())
            #expect(again.encode() == message.encode())
        }
    }
}
