// libFuzzer harness: every control message through `WireMessage.decode`.
//
// Any input may be rejected with a `WireError`; a decoded message must encode again into a
// frame that decodes. With LLAMA_FUZZ_WRITE_SEEDS=DIR the harness instead writes one encoded
// sample of every message kind into DIR and exits (how Tests/Fuzz/Corpus/wire-* was made).

import FuzzDriver
import ClusterWire
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let message = try? WireMessage.decode(bytes) else { return 0 }
    let again = message.encode()
    do {
        _ = try WireMessage.decode(again)
    } catch {
        fatalError("a decoded \(message.kind) message re-encodes into a frame that does not decode: \(error)")
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    guard let directory = getenv("LLAMA_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }) else { return 0 }
    for (index, message) in seedMessages().enumerated() {
        let path = "\(directory)/\(message.kind)-\(index).bin"
        guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
        let bytes = message.encode()
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        print(path)
    }
    exit(0)
}

/// One or two samples of every message kind, with borderline values.
func seedMessages() -> [WireMessage] {
    let hyperparameters = ModelHyperparameters(
        layerCount: 32, embeddingWidth: 4096, feedForwardWidth: 11008, headCount: 32, kvHeadCount: 32,
        vocabularySize: 32000, trainingContextLength: 4096, ropeFreqBase: 10000, rmsNormEpsilon: 1e-5,
        ropeDimensionCount: 128)
    return [
        .join(Join(workerName: "worker-1", threads: 2, memoryBudgetBytes: 24 << 30, cpuFeatures: "avx2 fma f16c",
                   hasModelFile: true, modelFingerprint: "sha256:0123", dataEndpoint: "tcp://127.0.0.1:40001",
                   heldLayers: 0..<16, layerDecodeSeconds: 0.001, layerPrefillSeconds: 0.0001)),
        .join(Join(workerName: "", threads: 0, memoryBudgetBytes: 0, cpuFeatures: "", protocolVersion: 0,
                   hasModelFile: false)),
        .shardAssignment(ShardAssignment(
            layerBegin: 0, layerEnd: 16, modelFingerprint: "fp", activationDType: .f16, maxSequences: 8,
            contextLength: 4096,
            input: PipelineEndpoint(address: "tcp://127.0.0.1:5601", mode: .bind),
            output: PipelineEndpoint(address: "tcp://127.0.0.1:5602", mode: .connect),
            streamWeights: true, hyperparameters: hyperparameters)),
        .shardAssignment(ShardAssignment(
            layerBegin: 16, layerEnd: 32, modelFingerprint: "", activationDType: .f32, maxSequences: 1,
            contextLength: 1,
            input: PipelineEndpoint(address: "ipc:///tmp/in", mode: .connect),
            output: PipelineEndpoint(address: "inproc://out", mode: .bind),
            streamWeights: false, hyperparameters: nil, epoch: 3, maxBatch: 64, kvCacheDType: .f32)),
        .ready(Ready(layerBegin: 3, layerEnd: 4, residentBytes: UInt64.max, epoch: 7)),
        .heartbeat(Heartbeat(sequence: 1 << 40, unixTimeNanos: 1_700_000_000_123_456_789, tokensProcessed: 12345,
                             busySeconds: 3.25)),
        .sequenceRelease(SequenceRelease(sequenceIDs: [0, 1, -1, Int32.max, Int32.min])),
        .sequenceRelease(SequenceRelease(sequenceIDs: [])),
        .shutdown(Shutdown(reason: "operator asked")),
        .error(ErrorReport(code: .modelMismatch, message: "fingerprint differs")),
        .error(ErrorReport(code: ErrorReport.Code(rawValue: 99), message: "")),
        .weightRequest(WeightRequest(tensorName: "blk.0.attn_q.weight", offset: 1 << 33, maxChunkBytes: 1 << 20)),
        .tensorChunk(TensorChunk(tensorName: "blk.3.ffn_down.weight", ggmlType: 8, shape: [64, 2], offset: 0,
                                 totalSize: 136, data: (0..<68).map { UInt8(truncatingIfNeeded: $0 &* 37) })),
        .tensorChunk(TensorChunk(tensorName: "output_norm.weight", ggmlType: 0, shape: [4096], offset: 0,
                                 totalSize: 16384, data: [])),
        .weightsDone(WeightsDone(tensorCount: 291, totalBytes: 7_000_000_000)),
        .sequenceCopy(SequenceCopy(source: 0, destination: 3, count: 17)),
        .calibrationRequest(CalibrationRequest(hyperparameters: hyperparameters, ggmlType: 2)),
        .calibrationResult(CalibrationResult(layerDecodeSeconds: 0.002, layerPrefillSeconds: 0.0003)),
        .activation(ActivationFrame(
            stepID: 9, width: 3, dtype: .f32, sequenceIDs: [0, 0, 5], positions: [0, 1, 77],
            needLogits: [false, true, true], values: [1, -2, 3.5, .pi, -0.0, 1e-30, .infinity, -.greatestFiniteMagnitude, 7])),
        .activation(ActivationFrame(
            stepID: UInt64.max, width: 2, dtype: .f16, sequenceIDs: [-3], positions: [4095],
            values: [0.1, -65504])),
        .activation(ActivationFrame(
            stepID: 0, width: 8, dtype: .f16, sequenceIDs: [1, 2], positions: [0, 0], needLogits: [true, false],
            values: (0..<16).map { Float($0) * 0.25 - 2 })),
    ]
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_wire_control_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
