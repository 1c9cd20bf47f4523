import CClusterWire

/// Any message of the cluster protocol; one ZeroMQ frame carries exactly one.
public enum WireMessage: Equatable, Sendable {
    case activation(ActivationFrame)
    case join(Join)
    case shardAssignment(ShardAssignment)
    case ready(Ready)
    case heartbeat(Heartbeat)
    case sequenceRelease(SequenceRelease)
    case shutdown(Shutdown)
    case error(ErrorReport)
    case weightRequest(WeightRequest)
    case tensorChunk(TensorChunk)
    case weightsDone(WeightsDone)
    case sequenceCopy(SequenceCopy)
    case calibrationRequest(CalibrationRequest)
    case calibrationResult(CalibrationResult)

    /// The message kind, as spelled in the protocol definition (for logs and errors).
    public var kind: String {
        switch self {
        case .activation: return "activation"
        case .join: return "join"
        case .shardAssignment: return "shard_assignment"
        case .ready: return "ready"
        case .heartbeat: return "heartbeat"
        case .sequenceRelease: return "sequence_release"
        case .shutdown: return "shutdown"
        case .error: return "error"
        case .weightRequest: return "weight_request"
        case .tensorChunk: return "tensor_chunk"
        case .weightsDone: return "weights_done"
        case .sequenceCopy: return "sequence_copy"
        case .calibrationRequest: return "calibration_request"
        case .calibrationResult: return "calibration_result"
        }
    }

    // MARK: - Encoding

    /// Serializes the message in an envelope of the current protocol version.
    ///
    /// Strings are sent up to their first NUL character. Activation frames are encoded as they
    /// are, without ``ActivationFrame/validate()``: a receiver rejects an inconsistent one.
    public func encode() -> [UInt8] {
        var output: [UInt8] = []
        encode(into: &output)
        return output
    }

    /// Serializes the message into `output`, replacing its contents and reusing its storage.
    public func encode(into output: inout [UInt8]) {
        var scratch = ActivationEncodingScratch()
        encode(into: &output, scratch: &scratch)
    }

    func encode(into output: inout [UInt8], scratch: inout ActivationEncodingScratch) {
        if case .activation(let frame) = self {
            withCActivationFrame(frame, scratch: &scratch) { cFrame in
                var envelope = LlamaCluster__Envelope()
                llama_cluster__envelope__init(&envelope)
                envelope.protocol_version = WireProtocol.version
                envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_ACTIVATION
                envelope.activation = cFrame
                packEnvelope(&envelope, into: &output)
            }
            return
        }
        let allocations = CAllocations()
        var envelope = LlamaCluster__Envelope()
        llama_cluster__envelope__init(&envelope)
        envelope.protocol_version = WireProtocol.version
        switch self {
        case .activation:
            preconditionFailure("handled above")
        case .join(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_JOIN
            envelope.join = makeCJoin(message, allocations)
        case .shardAssignment(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_SHARD_ASSIGNMENT
            envelope.shard_assignment = makeCShardAssignment(message, allocations)
        case .ready(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_READY
            envelope.ready = makeCReady(message, allocations)
        case .heartbeat(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_HEARTBEAT
            envelope.heartbeat = makeCHeartbeat(message, allocations)
        case .sequenceRelease(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_SEQUENCE_RELEASE
            envelope.sequence_release = makeCSequenceRelease(message, allocations)
        case .shutdown(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_SHUTDOWN
            envelope.shutdown = makeCShutdown(message, allocations)
        case .error(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_ERROR
            envelope.error = makeCErrorReport(message, allocations)
        case .weightRequest(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_WEIGHT_REQUEST
            envelope.weight_request = makeCWeightRequest(message, allocations)
        case .tensorChunk(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_TENSOR_CHUNK
            envelope.tensor_chunk = makeCTensorChunk(message, allocations)
        case .weightsDone(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_WEIGHTS_DONE
            envelope.weights_done = makeCWeightsDone(message, allocations)
        case .sequenceCopy(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_SEQUENCE_COPY
            envelope.sequence_copy = makeCSequenceCopy(message, allocations)
        case .calibrationRequest(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_CALIBRATION_REQUEST
            envelope.calibration_request = makeCCalibrationRequest(message, allocations)
        case .calibrationResult(let message):
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_CALIBRATION_RESULT
            envelope.calibration_result = makeCCalibrationResult(message, allocations)
        }
        packEnvelope(&envelope, into: &output)
        withExtendedLifetime(allocations) {}
    }

    // MARK: - Decoding

    /// Decodes and validates one frame.
    ///
    /// - Throws: ``WireError`` naming what is wrong with the frame.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> WireMessage {
        let envelope = try unpackEnvelope(bytes, allocator: nil)
        defer { llama_cluster__envelope__free_unpacked(envelope, nil) }
        return try decodeBody(of: envelope)
    }

    /// Decodes and validates one frame.
    ///
    /// - Throws: ``WireError`` naming what is wrong with the frame.
    public static func decode(_ bytes: [UInt8]) throws -> WireMessage {
        try bytes.withUnsafeBytes { try decode($0) }
    }
}

// MARK: - Envelope helpers

/// Packs `envelope` into `output`, replacing its contents.
func packEnvelope(_ envelope: UnsafePointer<LlamaCluster__Envelope>, into output: inout [UInt8]) {
    let size = llama_cluster__envelope__get_packed_size(envelope)
    resizeReusingStorage(&output, to: size, fill: 0)
    let written = output.withUnsafeMutableBufferPointer { buffer in
        llama_cluster__envelope__pack(envelope, buffer.baseAddress)
    }
    precondition(written == size, "protobuf-c packed \(written) bytes, announced \(size)")
}

/// Parses an envelope and checks its protocol version and that it carries a message.
/// The caller frees the result with `llama_cluster__envelope__free_unpacked` (same allocator).
func unpackEnvelope(
    _ bytes: UnsafeRawBufferPointer, allocator: UnsafeMutablePointer<ProtobufCAllocator>?
) throws -> UnsafeMutablePointer<LlamaCluster__Envelope> {
    guard let base = bytes.baseAddress, bytes.count > 0 else { throw WireError.emptyFrame }
    guard let envelope = llama_cluster__envelope__unpack(
        allocator, bytes.count, base.assumingMemoryBound(to: UInt8.self))
    else {
        throw WireError.undecodable(byteCount: bytes.count)
    }
    let version = envelope.pointee.protocol_version
    if version != WireProtocol.version {
        llama_cluster__envelope__free_unpacked(envelope, allocator)
        throw WireError.unsupportedProtocolVersion(received: version, supported: WireProtocol.version)
    }
    if envelope.pointee.body_case == LLAMA_CLUSTER__ENVELOPE__BODY__NOT_SET {
        llama_cluster__envelope__free_unpacked(envelope, allocator)
        throw WireError.missingBody
    }
    return envelope
}

/// Converts the (version-checked) envelope's body into a validated Swift message.
func decodeBody(of envelope: UnsafeMutablePointer<LlamaCluster__Envelope>) throws -> WireMessage {
    let body = envelope.pointee
    switch body.body_case {
    case LLAMA_CLUSTER__ENVELOPE__BODY_ACTIVATION:
        var frame = ActivationFrame()
        try decodeActivationFrame(try present(body.activation, "activation"), into: &frame)
        return .activation(frame)
    case LLAMA_CLUSTER__ENVELOPE__BODY_JOIN:
        return .join(try decodeJoin(try present(body.join, "join")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_SHARD_ASSIGNMENT:
        return .shardAssignment(try decodeShardAssignment(try present(body.shard_assignment, "shard_assignment")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_READY:
        return .ready(try decodeReady(try present(body.ready, "ready")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_HEARTBEAT:
        return .heartbeat(decodeHeartbeat(try present(body.heartbeat, "heartbeat")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_SEQUENCE_RELEASE:
        return .sequenceRelease(decodeSequenceRelease(try present(body.sequence_release, "sequence_release")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_SHUTDOWN:
        return .shutdown(try decodeShutdown(try present(body.shutdown, "shutdown")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_ERROR:
        return .error(try decodeErrorReport(try present(body.error, "error")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_WEIGHT_REQUEST:
        return .weightRequest(try decodeWeightRequest(try present(body.weight_request, "weight_request")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_TENSOR_CHUNK:
        return .tensorChunk(try decodeTensorChunk(try present(body.tensor_chunk, "tensor_chunk")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_WEIGHTS_DONE:
        return .weightsDone(decodeWeightsDone(try present(body.weights_done, "weights_done")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_SEQUENCE_COPY:
        return .sequenceCopy(try decodeSequenceCopy(try present(body.sequence_copy, "sequence_copy")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_CALIBRATION_REQUEST:
        return .calibrationRequest(try decodeCalibrationRequest(try present(body.calibration_request, "calibration_request")))
    case LLAMA_CLUSTER__ENVELOPE__BODY_CALIBRATION_RESULT:
        return .calibrationResult(try decodeCalibrationResult(try present(body.calibration_result, "calibration_result")))
    default:
        throw WireError.missingBody
    }
}

/// Replaces the contents of `array` by `count` elements, keeping the elements already there
/// and filling new ones with `fill`; reuses the storage when it is large enough.
@inline(__always)
func resizeReusingStorage<Element>(_ array: inout [Element], to count: Int, fill: Element) {
    if array.count > count {
        array.removeLast(array.count - count)
    } else if array.count < count {
        array.append(contentsOf: repeatElement(fill, count: count - array.count))
    }
}
