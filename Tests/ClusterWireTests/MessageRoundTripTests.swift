import TestSupport
import ClusterWire
import Testing

/// One sample of every message kind, with values that exercise the encoding (large and
/// negative numbers, non-ASCII strings, empty and non-empty arrays, optional parts).
func sampleMessages() -> [WireMessage] {
    let hyperparameters = ModelHyperparameters(
        layerCount: 32, embeddingWidth: 4096, feedForwardWidth: 11008, headCount: 32, kvHeadCount: 32,
        vocabularySize: 32000, trainingContextLength: 4096, ropeFreqBase: 10000, rmsNormEpsilon: 1e-5)
    return [
        .join(Join(
            workerName: "worker-ü-1", threads: 2, memoryBudgetBytes: 24 << 30, cpuFeatures: "avx2 fma f16c avx512f",
            hasModelFile: true, modelFingerprint: "sha256:0123456789abcdef")),
        .join(Join(workerName: "", threads: 0, memoryBudgetBytes: 0, cpuFeatures: "", protocolVersion: 7, hasModelFile: false)),
        .shardAssignment(ShardAssignment(
            layerBegin: 0, layerEnd: 16, modelFingerprint: "fp", activationDType: .f16, maxSequences: 8,
            contextLength: 4096,
            input: PipelineEndpoint(address: "tcp://127.0.0.1:5601", mode: .bind),
            output: PipelineEndpoint(address: "tcp://10.1.2.3:5602", mode: .connect),
            streamWeights: true, hyperparameters: hyperparameters)),
        .shardAssignment(ShardAssignment(
            layerBegin: 16, layerEnd: 32, modelFingerprint: "", activationDType: .f32, maxSequences: 1,
            contextLength: 512,
            input: PipelineEndpoint(address: "ipc:///tmp/in", mode: .connect),
            output: PipelineEndpoint(address: "inproc://out", mode: .bind),
            streamWeights: false, hyperparameters: nil, epoch: 3, maxBatch: 64, kvCacheDType: .f32)),
        .ready(Ready(layerBegin: 3, layerEnd: 4, residentBytes: UInt64.max, epoch: 7)),
        .join(Join(workerName: "w9", threads: 2, memoryBudgetBytes: 1, cpuFeatures: "", hasModelFile: false,
                   dataEndpoint: "tcp://10.1.2.3:40001")),
        .error(ErrorReport(code: .notJoined, message: "join again")),
        .heartbeat(Heartbeat(sequence: 1 << 40, unixTimeNanos: 1_700_000_000_123_456_789, tokensProcessed: 12345, busySeconds: 3.25)),
        .heartbeat(Heartbeat(sequence: 0, unixTimeNanos: 0, tokensProcessed: 0, busySeconds: 0)),
        .sequenceRelease(SequenceRelease(sequenceIDs: [0, 1, -1, Int32.max, Int32.min, 300])),
        .sequenceRelease(SequenceRelease(sequenceIDs: [])),
        .shutdown(Shutdown(reason: "operator asked — bye")),
        .error(ErrorReport(code: .modelMismatch, message: "fingerprint differs")),
        .error(ErrorReport(code: ErrorReport.Code(rawValue: 99), message: "")),
        .weightRequest(WeightRequest(tensorName: "blk.0.attn_q.weight", offset: 1 << 33, maxChunkBytes: 1 << 20)),
        .weightRequest(WeightRequest(tensorName: "")),
        .tensorChunk(TensorChunk(
            tensorName: "blk.3.ffn_down.weight", ggmlType: 12, shape: [11008, 4096], offset: 1 << 33,
            totalSize: (1 << 33) + 1000, data: (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 37) })),
        .tensorChunk(TensorChunk(tensorName: "output_norm.weight", ggmlType: 0, shape: [4096], offset: 0, totalSize: 16384, data: [])),
        .weightsDone(WeightsDone(tensorCount: 291, totalBytes: 7_000_000_000)),
        .activation(ActivationFrame(
            stepID: 9, width: 3, dtype: .f32, sequenceIDs: [0, 0, 5], positions: [0, 1, 77],
            needLogits: [false, true, true], values: [1, -2, 3.5, .pi, -0.0, 1e-30, .infinity, -.greatestFiniteMagnitude, 7])),
        .activation(ActivationFrame(
            stepID: UInt64.max, width: 2, dtype: .f16, sequenceIDs: [-3], positions: [4095],
            values: [Float(Float16(0.1)), Float(Float16(-65504))])),
    ]
}

@Suite("Message round trips")
struct MessageRoundTripTests {
    @Test("every message kind survives encode then decode")
    func everyMessageRoundTrips() throws {
        let messages = sampleMessages()
        let kinds = Set(messages.map(\.kind))
        #expect(kinds.count == 11, "samples cover every message kind")
        for message in messages {
            let bytes = message.encode()
            let decoded = try WireMessage.decode(bytes)
            #expect(decoded == message, "\(message.kind)")
        }
    }

    @Test("the reusable codec decodes what WireMessage encodes, and vice versa")
    func codecAgreesWithWireMessage() throws {
        let codec = ActivationCodec()
        var output: [UInt8] = []
        var frame = ActivationFrame()
        for message in sampleMessages() {
            codec.encode(message, into: &output)
            #expect(output == message.encode())
            let outcome = try output.withUnsafeBytes { try codec.decode($0, into: &frame) }
            if case .activation(let expected) = message {
                #expect(outcome == .activation)
                #expect(frame == expected)
            } else {
                #expect(outcome == .message(message))
            }
        }
    }

    @Test("f16 activations come back as the nearest half-precision values")
    func f16ActivationRoundsToHalf() throws {
        var generator = SeededGenerator(seed: 7)
        let width = 64
        let values = (0..<(3 * width)).map { _ in Float.random(in: -300...300, using: &generator) }
        let frame = ActivationFrame(
            stepID: 1, width: width, dtype: .f16, sequenceIDs: [1, 2, 3], positions: [10, 20, 30],
            needLogits: [true, false, true], values: values)
        guard case .activation(let decoded) = try WireMessage.decode(WireMessage.activation(frame).encode()) else {
            Issue.record("not decoded as an activation frame")
            return
        }
        #expect(decoded.values == values.map { Float(Float16($0)) })
        #expect(decoded.sequenceIDs == frame.sequenceIDs)
        #expect(decoded.positions == frame.positions)
        #expect(decoded.needLogits == frame.needLogits)
        #expect(decoded.width == width)
        #expect(decoded.dtype == .f16)
        #expect(decoded.stepID == 1)
    }

    @Test("a hand-built frame decodes, and encoding reproduces its exact bytes")
    func encodingMatchesIndependentWriter() throws {
        let values: [Float] = [0.5, -1.25, 3, 1024, -0.0009765625, 65504]
        let expected = envelope(field: EnvelopeField.activation, body: activationBody(
            stepID: 300, nTokens: 2, width: 3, dtype: 2, sequenceIDs: [4, -1], positions: [129, 0],
            needLogits: [false, true], data: referenceHalfBytes(values)))
        let frame = ActivationFrame(
            stepID: 300, width: 3, dtype: .f16, sequenceIDs: [4, -1], positions: [129, 0],
            needLogits: [false, true], values: values)
        #expect(try WireMessage.decode(expected) == .activation(frame))
        #expect(WireMessage.activation(frame).encode() == expected)

        var join = ProtoWriter()
        join.string(1, "w")
        join.uint(2, 4)
        join.uint(3, 1 << 32)
        join.string(4, "avx2")
        join.uint(5, 1)
        join.uint(6, 1)
        join.string(7, "abc")
        let joinBytes = envelope(field: EnvelopeField.join, body: join)
        let joinMessage = WireMessage.join(Join(
            workerName: "w", threads: 4, memoryBudgetBytes: 1 << 32, cpuFeatures: "avx2", hasModelFile: true,
            modelFingerprint: "abc"))
        #expect(try WireMessage.decode(joinBytes) == joinMessage)
        #expect(joinMessage.encode() == joinBytes)
    }

    @Test("tensor chunks carry the CRC-32C of their data")
    func tensorChunkChecksumIsOnTheWire() throws {
        let data: [UInt8] = Array("123456789".utf8)
        let chunk = TensorChunk(tensorName: "t", ggmlType: 1, shape: [9], offset: 0, totalSize: 9, data: data)
        var body = ProtoWriter()
        body.string(1, "t")
        body.uint(2, 1)
        body.packedVarints(3, [9])
        body.uint(5, 9)
        body.lengthDelimited(6, data)
        body.fixed32(7, 0xE306_9283)
        let expected = envelope(field: EnvelopeField.tensorChunk, body: body)
        #expect(WireMessage.tensorChunk(chunk).encode() == expected)
        #expect(try WireMessage.decode(expected) == .tensorChunk(chunk))
    }
}
