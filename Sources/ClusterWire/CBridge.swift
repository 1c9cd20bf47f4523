import CClusterWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Conversion between the Swift message types and the protobuf-c structs generated from
// proto/llama_cluster.proto. Nothing here is public.

// MARK: - Memory for encoding control messages

/// C memory that backs the structs of one message while it is packed; freed with the object.
final class CAllocations {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit {
        for block in blocks { free(block) }
    }

    /// A zeroed C struct.
    func object<T>(_ type: T.Type) -> UnsafeMutablePointer<T> {
        guard let raw = calloc(1, MemoryLayout<T>.stride) else { fatalError("out of memory") }
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: 1)
    }

    /// A NUL-terminated copy of `string`.
    func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        guard let copy = strdup(string) else { fatalError("out of memory") }
        blocks.append(UnsafeMutableRawPointer(copy))
        return copy
    }

    /// `count` zeroed C values.
    func objects<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        guard let raw = calloc(count, MemoryLayout<T>.stride) else { fatalError("out of memory") }
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    /// A copy of `values` (trivial types only); nil when empty.
    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        if values.isEmpty { return nil }
        guard let raw = malloc(MemoryLayout<T>.stride * values.count) else { fatalError("out of memory") }
        blocks.append(raw)
        let typed = raw.bindMemory(to: T.self, capacity: values.count)
        _ = UnsafeMutableBufferPointer(start: typed, count: values.count).initialize(from: values)
        return typed
    }
}

// MARK: - Swift -> C

func makeCJoin(_ message: Join, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__Join> {
    let c = memory.object(LlamaCluster__Join.self)
    llama_cluster__join__init(c)
    c.pointee.worker_name = memory.string(message.workerName)
    c.pointee.threads = message.threads
    c.pointee.memory_budget_bytes = message.memoryBudgetBytes
    c.pointee.cpu_features = memory.string(message.cpuFeatures)
    c.pointee.protocol_version = message.protocolVersion
    c.pointee.has_model_file = message.hasModelFile ? 1 : 0
    c.pointee.model_fingerprint = memory.string(message.modelFingerprint)
    c.pointee.data_endpoint = memory.string(message.dataEndpoint)
    c.pointee.held_layer_begin = message.heldLayers?.lowerBound ?? 0
    c.pointee.held_layer_end = message.heldLayers?.upperBound ?? 0
    c.pointee.layer_decode_seconds = message.layerDecodeSeconds
    c.pointee.layer_prefill_seconds = message.layerPrefillSeconds
    return c
}

func makeCEndpoint(_ endpoint: PipelineEndpoint, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__PipelineEndpoint> {
    let c = memory.object(LlamaCluster__PipelineEndpoint.self)
    llama_cluster__pipeline_endpoint__init(c)
    c.pointee.address = memory.string(endpoint.address)
    c.pointee.mode = LlamaCluster__EndpointMode(rawValue: endpoint.mode.rawValue)
    return c
}

func makeCShardAssignment(_ message: ShardAssignment, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__ShardAssignment> {
    let c = memory.object(LlamaCluster__ShardAssignment.self)
    llama_cluster__shard_assignment__init(c)
    c.pointee.layer_begin = message.layerBegin
    c.pointee.layer_end = message.layerEnd
    c.pointee.model_fingerprint = memory.string(message.modelFingerprint)
    c.pointee.activation_dtype = LlamaCluster__ActivationDType(rawValue: message.activationDType.rawValue)
    c.pointee.max_sequences = message.maxSequences
    c.pointee.context_length = message.contextLength
    c.pointee.input = makeCEndpoint(message.input, memory)
    c.pointee.output = makeCEndpoint(message.output, memory)
    c.pointee.stream_weights = message.streamWeights ? 1 : 0
    if let hyperparameters = message.hyperparameters {
        c.pointee.hyperparameters = makeCHyperparameters(hyperparameters, memory)
    }
    c.pointee.epoch = message.epoch
    c.pointee.max_batch = message.maxBatch
    c.pointee.kv_cache_dtype = LlamaCluster__KVCacheDType(rawValue: message.kvCacheDType.rawValue)
    c.pointee.n_input_peer_keys = message.inputPeerKeys.count
    if !message.inputPeerKeys.isEmpty {
        let keys = memory.objects(UnsafeMutablePointer<CChar>?.self, count: message.inputPeerKeys.count)
        for (i, k) in message.inputPeerKeys.enumerated() { keys[i] = memory.string(k) }
        c.pointee.input_peer_keys = keys
    }
    c.pointee.output_server_key = memory.string(message.outputServerKey)
    c.pointee.heartbeat_timeout = message.heartbeatTimeout
    return c
}

func makeCHyperparameters(_ hyperparameters: ModelHyperparameters, _ memory: CAllocations)
    -> UnsafeMutablePointer<LlamaCluster__ModelHyperparameters>
{
    let h = memory.object(LlamaCluster__ModelHyperparameters.self)
    llama_cluster__model_hyperparameters__init(h)
    h.pointee.layer_count = hyperparameters.layerCount
    h.pointee.embedding_width = hyperparameters.embeddingWidth
    h.pointee.feed_forward_width = hyperparameters.feedForwardWidth
    h.pointee.head_count = hyperparameters.headCount
    h.pointee.kv_head_count = hyperparameters.kvHeadCount
    h.pointee.vocabulary_size = hyperparameters.vocabularySize
    h.pointee.training_context_length = hyperparameters.trainingContextLength
    h.pointee.rope_freq_base = hyperparameters.ropeFreqBase
    h.pointee.rms_norm_epsilon = hyperparameters.rmsNormEpsilon
    h.pointee.rope_dimension_count = hyperparameters.ropeDimensionCount
    return h
}

func makeCSequenceCopy(_ message: SequenceCopy, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__SequenceCopy> {
    let c = memory.object(LlamaCluster__SequenceCopy.self)
    llama_cluster__sequence_copy__init(c)
    c.pointee.source = message.source
    c.pointee.destination = message.destination
    c.pointee.count = message.count
    return c
}

func makeCCalibrationRequest(_ message: CalibrationRequest, _ memory: CAllocations)
    -> UnsafeMutablePointer<LlamaCluster__CalibrationRequest>
{
    let c = memory.object(LlamaCluster__CalibrationRequest.self)
    llama_cluster__calibration_request__init(c)
    c.pointee.hyperparameters = makeCHyperparameters(message.hyperparameters, memory)
    c.pointee.ggml_type = message.ggmlType
    return c
}

func makeCCalibrationResult(_ message: CalibrationResult, _ memory: CAllocations)
    -> UnsafeMutablePointer<LlamaCluster__CalibrationResult>
{
    let c = memory.object(LlamaCluster__CalibrationResult.self)
    llama_cluster__calibration_result__init(c)
    c.pointee.layer_decode_seconds = message.layerDecodeSeconds
    c.pointee.layer_prefill_seconds = message.layerPrefillSeconds
    return c
}

func makeCReady(_ message: Ready, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__Ready> {
    let c = memory.object(LlamaCluster__Ready.self)
    llama_cluster__ready__init(c)
    c.pointee.layer_begin = message.layerBegin
    c.pointee.layer_end = message.layerEnd
    c.pointee.resident_bytes = message.residentBytes
    c.pointee.epoch = message.epoch
    return c
}

func makeCHeartbeat(_ message: Heartbeat, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__Heartbeat> {
    let c = memory.object(LlamaCluster__Heartbeat.self)
    llama_cluster__heartbeat__init(c)
    c.pointee.sequence = message.sequence
    c.pointee.unix_time_nanos = message.unixTimeNanos
    c.pointee.tokens_processed = message.tokensProcessed
    c.pointee.busy_seconds = message.busySeconds
    return c
}

func makeCSequenceRelease(_ message: SequenceRelease, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__SequenceRelease> {
    let c = memory.object(LlamaCluster__SequenceRelease.self)
    llama_cluster__sequence_release__init(c)
    c.pointee.n_sequence_ids = message.sequenceIDs.count
    c.pointee.sequence_ids = memory.array(message.sequenceIDs)
    return c
}

func makeCShutdown(_ message: Shutdown, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__Shutdown> {
    let c = memory.object(LlamaCluster__Shutdown.self)
    llama_cluster__shutdown__init(c)
    c.pointee.reason = memory.string(message.reason)
    return c
}

func makeCErrorReport(_ message: ErrorReport, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__ErrorReport> {
    let c = memory.object(LlamaCluster__ErrorReport.self)
    llama_cluster__error_report__init(c)
    c.pointee.code = LlamaCluster__ErrorCode(rawValue: message.code.rawValue)
    c.pointee.message = memory.string(message.message)
    return c
}

func makeCWeightRequest(_ message: WeightRequest, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__WeightRequest> {
    let c = memory.object(LlamaCluster__WeightRequest.self)
    llama_cluster__weight_request__init(c)
    c.pointee.tensor_name = memory.string(message.tensorName)
    c.pointee.max_chunk_bytes = message.maxChunkBytes
    c.pointee.offset = message.offset
    return c
}

func makeCTensorChunk(_ message: TensorChunk, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__TensorChunk> {
    let c = memory.object(LlamaCluster__TensorChunk.self)
    llama_cluster__tensor_chunk__init(c)
    c.pointee.tensor_name = memory.string(message.tensorName)
    c.pointee.ggml_type = message.ggmlType
    c.pointee.n_shape = message.shape.count
    c.pointee.shape = memory.array(message.shape)
    c.pointee.offset = message.offset
    c.pointee.total_size = message.totalSize
    c.pointee.data = ProtobufCBinaryData(len: message.data.count, data: memory.array(message.data))
    c.pointee.crc32c = message.data.withUnsafeBytes { CRC32C.checksum($0) }
    return c
}

func makeCWeightsDone(_ message: WeightsDone, _ memory: CAllocations) -> UnsafeMutablePointer<LlamaCluster__WeightsDone> {
    let c = memory.object(LlamaCluster__WeightsDone.self)
    llama_cluster__weights_done__init(c)
    c.pointee.tensor_count = message.tensorCount
    c.pointee.total_bytes = message.totalBytes
    return c
}

// MARK: - Activation frames, Swift -> C

/// Reusable buffers for encoding activation frames.
struct ActivationEncodingScratch {
    var halves: [UInt16] = []
    var logitsFlags: [protobuf_c_boolean] = []
}

/// Calls `body` with a C activation frame that points into `frame`'s arrays (and, for f16,
/// into `scratch`); nothing is allocated once `scratch` has grown to the frame size.
func withCActivationFrame<Result>(
    _ frame: ActivationFrame, scratch: inout ActivationEncodingScratch,
    _ body: (UnsafeMutablePointer<LlamaCluster__ActivationFrame>) -> Result
) -> Result {
    precondition(frame.width >= 0 && frame.width <= Int(UInt32.max), "activation width \(frame.width) does not fit the wire")
    precondition(frame.tokenCount <= Int(UInt32.max), "activation token count \(frame.tokenCount) does not fit the wire")

    var c = LlamaCluster__ActivationFrame()
    llama_cluster__activation_frame__init(&c)
    c.step_id = frame.stepID
    c.n_tokens = UInt32(frame.tokenCount)
    c.width = UInt32(frame.width)
    c.dtype = LlamaCluster__ActivationDType(rawValue: frame.dtype.rawValue)

    resizeReusingStorage(&scratch.logitsFlags, to: frame.needLogits.count, fill: 0)
    for index in frame.needLogits.indices {
        scratch.logitsFlags[index] = frame.needLogits[index] ? 1 : 0
    }
    if frame.dtype == .f16 {
        resizeReusingStorage(&scratch.halves, to: frame.values.count, fill: 0)
        frame.values.withUnsafeBufferPointer { source in
            scratch.halves.withUnsafeMutableBufferPointer { destination in
                HalfPrecision.encode(source, into: destination)
            }
        }
    }

    return frame.sequenceIDs.withUnsafeBufferPointer { sequenceIDs in
        frame.positions.withUnsafeBufferPointer { positions in
            scratch.logitsFlags.withUnsafeBufferPointer { logitsFlags in
                c.n_sequence_ids = sequenceIDs.count
                c.sequence_ids = UnsafeMutablePointer(mutating: sequenceIDs.baseAddress)
                c.n_positions = positions.count
                c.positions = UnsafeMutablePointer(mutating: positions.baseAddress)
                c.n_need_logits = logitsFlags.count
                c.need_logits = UnsafeMutablePointer(mutating: logitsFlags.baseAddress)

                func withPayload(_ payload: UnsafeRawBufferPointer) -> Result {
                    c.data = ProtobufCBinaryData(
                        len: payload.count,
                        data: UnsafeMutablePointer(mutating: payload.baseAddress?.assumingMemoryBound(to: UInt8.self)))
                    return withUnsafeMutablePointer(to: &c, body)
                }
                switch frame.dtype {
                case .f32: return frame.values.withUnsafeBytes(withPayload)
                case .f16: return scratch.halves.withUnsafeBytes(withPayload)
                }
            }
        }
    }
}

// MARK: - C -> Swift

/// The sub-message, or an error naming it when the sender left it out.
func present<T>(_ pointer: UnsafeMutablePointer<T>?, _ field: String) throws -> UnsafeMutablePointer<T> {
    guard let pointer else { throw WireError.missingField(field) }
    return pointer
}

func decodeString(_ pointer: UnsafeMutablePointer<CChar>?, field: String) throws -> String {
    guard let pointer else { return "" }
    guard let string = String(validatingCString: pointer) else { throw WireError.invalidUTF8(field: field) }
    return string
}

func decodeArray<T>(_ pointer: UnsafeMutablePointer<T>?, count: Int) -> [T] {
    guard let pointer, count > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: pointer, count: count))
}

func decodeLayerRange(begin: UInt32, end: UInt32) throws {
    if end <= begin {
        throw WireError.invalidValue(field: "layer_end", reason: "layer range \(begin)..<\(end) is empty or reversed")
    }
}

func decodeJoin(_ c: UnsafeMutablePointer<LlamaCluster__Join>) throws -> Join {
    let m = c.pointee
    return Join(
        workerName: try decodeString(m.worker_name, field: "join.worker_name"),
        threads: m.threads,
        memoryBudgetBytes: m.memory_budget_bytes,
        cpuFeatures: try decodeString(m.cpu_features, field: "join.cpu_features"),
        protocolVersion: m.protocol_version,
        hasModelFile: m.has_model_file != 0,
        modelFingerprint: try decodeString(m.model_fingerprint, field: "join.model_fingerprint"),
        dataEndpoint: try decodeString(m.data_endpoint, field: "join.data_endpoint"),
        heldLayers: m.held_layer_end > m.held_layer_begin ? m.held_layer_begin..<m.held_layer_end : nil,
        layerDecodeSeconds: try finiteSeconds(m.layer_decode_seconds, field: "join.layer_decode_seconds"),
        layerPrefillSeconds: try finiteSeconds(m.layer_prefill_seconds, field: "join.layer_prefill_seconds"))
}

/// A duration in seconds that must be finite and not negative.
func finiteSeconds(_ value: Double, field: String) throws -> Double {
    guard value.isFinite, value >= 0 else { throw WireError.invalidValue(field: field, reason: "\(value) is not a duration") }
    return value
}

func decodeHyperparameters(_ h: LlamaCluster__ModelHyperparameters) -> ModelHyperparameters {
    ModelHyperparameters(
        layerCount: h.layer_count, embeddingWidth: h.embedding_width, feedForwardWidth: h.feed_forward_width,
        headCount: h.head_count, kvHeadCount: h.kv_head_count, vocabularySize: h.vocabulary_size,
        trainingContextLength: h.training_context_length, ropeFreqBase: h.rope_freq_base,
        rmsNormEpsilon: h.rms_norm_epsilon, ropeDimensionCount: h.rope_dimension_count)
}

func decodeSequenceCopy(_ c: UnsafeMutablePointer<LlamaCluster__SequenceCopy>) throws -> SequenceCopy {
    let m = c.pointee
    guard m.source >= 0, m.destination >= 0 else {
        throw WireError.invalidValue(field: "sequence_copy.source", reason: "sequence ids are not negative")
    }
    return SequenceCopy(source: m.source, destination: m.destination, count: m.count)
}

func decodeCalibrationRequest(_ c: UnsafeMutablePointer<LlamaCluster__CalibrationRequest>) throws -> CalibrationRequest {
    let h = try present(c.pointee.hyperparameters, "calibration_request.hyperparameters").pointee
    return CalibrationRequest(hyperparameters: decodeHyperparameters(h), ggmlType: c.pointee.ggml_type)
}

func decodeCalibrationResult(_ c: UnsafeMutablePointer<LlamaCluster__CalibrationResult>) throws -> CalibrationResult {
    CalibrationResult(
        layerDecodeSeconds: try finiteSeconds(c.pointee.layer_decode_seconds, field: "calibration_result.layer_decode_seconds"),
        layerPrefillSeconds: try finiteSeconds(c.pointee.layer_prefill_seconds, field: "calibration_result.layer_prefill_seconds"))
}

func decodeEndpoint(_ pointer: UnsafeMutablePointer<LlamaCluster__PipelineEndpoint>?, field: String) throws -> PipelineEndpoint {
    let m = try present(pointer, field).pointee
    let address = try decodeString(m.address, field: field + ".address")
    if address.isEmpty {
        throw WireError.missingField(field + ".address")
    }
    guard let mode = PipelineEndpoint.Mode(rawValue: m.mode.rawValue) else {
        throw WireError.invalidEnumValue(field: field + ".mode", value: m.mode.rawValue)
    }
    return PipelineEndpoint(address: address, mode: mode)
}

func decodeShardAssignment(_ c: UnsafeMutablePointer<LlamaCluster__ShardAssignment>) throws -> ShardAssignment {
    let m = c.pointee
    try decodeLayerRange(begin: m.layer_begin, end: m.layer_end)
    guard let dtype = ActivationDType(rawValue: m.activation_dtype.rawValue) else {
        throw WireError.invalidEnumValue(field: "shard_assignment.activation_dtype", value: m.activation_dtype.rawValue)
    }
    guard let kvCache = KVCacheDType(rawValue: m.kv_cache_dtype.rawValue) else {
        throw WireError.invalidEnumValue(field: "shard_assignment.kv_cache_dtype", value: m.kv_cache_dtype.rawValue)
    }
    let hyperparameters = m.hyperparameters.map { decodeHyperparameters($0.pointee) }
    var peerKeys: [String] = []
    for i in 0..<m.n_input_peer_keys {
        peerKeys.append(try decodeString(m.input_peer_keys[i], field: "shard_assignment.input_peer_keys"))
    }
    return ShardAssignment(
        layerBegin: m.layer_begin,
        layerEnd: m.layer_end,
        modelFingerprint: try decodeString(m.model_fingerprint, field: "shard_assignment.model_fingerprint"),
        activationDType: dtype,
        maxSequences: m.max_sequences,
        contextLength: m.context_length,
        input: try decodeEndpoint(m.input, field: "shard_assignment.input"),
        output: try decodeEndpoint(m.output, field: "shard_assignment.output"),
        streamWeights: m.stream_weights != 0,
        hyperparameters: hyperparameters,
        epoch: m.epoch,
        maxBatch: m.max_batch,
        kvCacheDType: kvCache,
        inputPeerKeys: peerKeys,
        outputServerKey: try decodeString(m.output_server_key, field: "shard_assignment.output_server_key"),
        heartbeatTimeout: try finiteSeconds(m.heartbeat_timeout, field: "shard_assignment.heartbeat_timeout"))
}

func decodeReady(_ c: UnsafeMutablePointer<LlamaCluster__Ready>) throws -> Ready {
    let m = c.pointee
    try decodeLayerRange(begin: m.layer_begin, end: m.layer_end)
    return Ready(layerBegin: m.layer_begin, layerEnd: m.layer_end, residentBytes: m.resident_bytes, epoch: m.epoch)
}

func decodeHeartbeat(_ c: UnsafeMutablePointer<LlamaCluster__Heartbeat>) -> Heartbeat {
    let m = c.pointee
    return Heartbeat(
        sequence: m.sequence, unixTimeNanos: m.unix_time_nanos,
        tokensProcessed: m.tokens_processed, busySeconds: m.busy_seconds)
}

func decodeSequenceRelease(_ c: UnsafeMutablePointer<LlamaCluster__SequenceRelease>) -> SequenceRelease {
    SequenceRelease(sequenceIDs: decodeArray(c.pointee.sequence_ids, count: c.pointee.n_sequence_ids))
}

func decodeShutdown(_ c: UnsafeMutablePointer<LlamaCluster__Shutdown>) throws -> Shutdown {
    Shutdown(reason: try decodeString(c.pointee.reason, field: "shutdown.reason"))
}

func decodeErrorReport(_ c: UnsafeMutablePointer<LlamaCluster__ErrorReport>) throws -> ErrorReport {
    ErrorReport(
        code: ErrorReport.Code(rawValue: c.pointee.code.rawValue),
        message: try decodeString(c.pointee.message, field: "error.message"))
}

func decodeWeightRequest(_ c: UnsafeMutablePointer<LlamaCluster__WeightRequest>) throws -> WeightRequest {
    let m = c.pointee
    return WeightRequest(tensorName: try decodeString(m.tensor_name, field: "weight_request.tensor_name"),
                         offset: m.offset, maxChunkBytes: m.max_chunk_bytes)
}

func decodeTensorChunk(_ c: UnsafeMutablePointer<LlamaCluster__TensorChunk>) throws -> TensorChunk {
    let m = c.pointee
    let name = try decodeString(m.tensor_name, field: "tensor_chunk.tensor_name")
    if name.isEmpty {
        throw WireError.missingField("tensor_chunk.tensor_name")
    }
    let length = UInt64(m.data.len)
    let (end, overflow) = m.offset.addingReportingOverflow(length)
    if overflow || end > m.total_size {
        throw WireError.invalidValue(
            field: "tensor_chunk.offset",
            reason: "chunk of \(length) bytes at offset \(m.offset) exceeds the tensor's \(m.total_size) bytes")
    }
    let computed = CRC32C.checksum(UnsafeRawBufferPointer(start: m.data.data, count: m.data.len))
    if computed != m.crc32c {
        throw WireError.checksumMismatch(tensor: name, expected: m.crc32c, computed: computed)
    }
    return TensorChunk(
        tensorName: name,
        ggmlType: m.ggml_type,
        shape: decodeArray(m.shape, count: m.n_shape),
        offset: m.offset,
        totalSize: m.total_size,
        data: decodeArray(m.data.data, count: m.data.len))
}

func decodeWeightsDone(_ c: UnsafeMutablePointer<LlamaCluster__WeightsDone>) -> WeightsDone {
    WeightsDone(tensorCount: c.pointee.tensor_count, totalBytes: c.pointee.total_bytes)
}

// MARK: - Activation frames, C -> Swift

/// Validates a C activation frame and writes it into `frame`, reusing the storage of its
/// arrays. `frame` is left untouched when validation fails.
func decodeActivationFrame(_ c: UnsafeMutablePointer<LlamaCluster__ActivationFrame>, into frame: inout ActivationFrame) throws {
    let m = c.pointee
    let tokenCount = Int(m.n_tokens)
    let width = Int(m.width)
    if tokenCount == 0 {
        throw WireError.invalidValue(field: "activation.n_tokens", reason: "a frame carries at least one token")
    }
    if width == 0 {
        throw WireError.invalidValue(field: "activation.width", reason: "must be positive")
    }
    guard let dtype = ActivationDType(rawValue: m.dtype.rawValue) else {
        throw WireError.invalidEnumValue(field: "activation.dtype", value: m.dtype.rawValue)
    }
    if m.n_sequence_ids != tokenCount {
        throw WireError.countMismatch(field: "activation.sequence_ids", count: m.n_sequence_ids, expected: tokenCount)
    }
    if m.n_positions != tokenCount {
        throw WireError.countMismatch(field: "activation.positions", count: m.n_positions, expected: tokenCount)
    }
    if m.n_need_logits != 0 && m.n_need_logits != tokenCount {
        throw WireError.countMismatch(field: "activation.need_logits", count: m.n_need_logits, expected: tokenCount)
    }
    // n_tokens and width are 32-bit, so their product fits 64 bits; the byte size might not.
    let elementCount = tokenCount * width
    let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: dtype.byteSize)
    if overflow || m.data.len != byteCount {
        throw WireError.dataSizeMismatch(field: "activation.data", byteCount: m.data.len, expected: overflow ? Int.max : byteCount)
    }

    frame.stepID = m.step_id
    frame.width = width
    frame.dtype = dtype
    frame.sequenceIDs.removeAll(keepingCapacity: true)
    frame.sequenceIDs.append(contentsOf: UnsafeBufferPointer(start: m.sequence_ids, count: tokenCount))
    frame.positions.removeAll(keepingCapacity: true)
    frame.positions.append(contentsOf: UnsafeBufferPointer(start: m.positions, count: tokenCount))
    frame.needLogits.removeAll(keepingCapacity: true)
    for index in 0..<m.n_need_logits {
        frame.needLogits.append(m.need_logits[index] != 0)
    }
    resizeReusingStorage(&frame.values, to: elementCount, fill: 0)
    frame.values.withUnsafeMutableBufferPointer { destination in
        guard let source = m.data.data else { return }
        switch dtype {
        case .f32:
            UnsafeMutableRawBufferPointer(destination).copyMemory(from: UnsafeRawBufferPointer(start: source, count: byteCount))
        case .f16:
            let halves = UnsafeRawPointer(source).assumingMemoryBound(to: UInt16.self)
            HalfPrecision.decode(UnsafeBufferPointer(start: halves, count: elementCount), into: destination)
        }
    }
}
