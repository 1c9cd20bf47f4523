// MARK: - Shared enums

/// Element encoding of an activation payload on the wire.
public enum ActivationDType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE binary32, 4 bytes per element.
    case f32 = 1
    /// IEEE binary16, 2 bytes per element (values are rounded to nearest even when encoded).
    case f16 = 2

    /// Bytes one element takes on the wire.
    public var byteSize: Int {
        switch self {
        case .f32: return 4
        case .f16: return 2
        }
    }

    public var description: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        }
    }
}

/// One end of a data-pipeline socket: a ZeroMQ endpoint and whether to bind or connect it.
public struct PipelineEndpoint: Equatable, Hashable, Sendable {
    /// Whether the socket binds the address or connects to it.
    public enum Mode: UInt32, Sendable, CaseIterable {
        case connect = 1
        case bind = 2
    }

    /// ZeroMQ endpoint, e.g. `tcp://10.0.0.2:5601`.
    public var address: String
    public var mode: Mode

    public init(address: String, mode: Mode) {
        self.address = address
        self.mode = mode
    }
}

// MARK: - Control messages

/// Worker → coordinator: the first message of a worker after it connects.
public struct Join: Equatable, Sendable {
    public var workerName: String
    public var threads: UInt32
    public var memoryBudgetBytes: UInt64
    /// CPU features of the worker, e.g. `"avx2 fma f16c avx512f"`.
    public var cpuFeatures: String
    public var protocolVersion: UInt32
    /// Whether the worker can read the model file locally.
    public var hasModelFile: Bool
    /// Fingerprint of the worker's local model file; empty when it has none.
    public var modelFingerprint: String
    /// Where the worker's data input listens, `"tcp://HOST:PORT"`.
    public var dataEndpoint: String
    /// Layers the worker holds loaded from an earlier assignment (a restarted coordinator
    /// adopts them); nil when it holds none.
    public var heldLayers: Range<UInt32>?
    /// Seconds one layer takes at the worker's threads (one token, and per token of a batch);
    /// 0 when not measured.
    public var layerDecodeSeconds: Double
    public var layerPrefillSeconds: Double

    public init(
        workerName: String, threads: UInt32, memoryBudgetBytes: UInt64, cpuFeatures: String,
        protocolVersion: UInt32 = WireProtocol.version, hasModelFile: Bool, modelFingerprint: String = "",
        dataEndpoint: String = "", heldLayers: Range<UInt32>? = nil, layerDecodeSeconds: Double = 0,
        layerPrefillSeconds: Double = 0
    ) {
        self.dataEndpoint = dataEndpoint
        self.heldLayers = heldLayers
        self.layerDecodeSeconds = layerDecodeSeconds
        self.layerPrefillSeconds = layerPrefillSeconds
        self.workerName = workerName
        self.threads = threads
        self.memoryBudgetBytes = memoryBudgetBytes
        self.cpuFeatures = cpuFeatures
        self.protocolVersion = protocolVersion
        self.hasModelFile = hasModelFile
        self.modelFingerprint = modelFingerprint
    }
}

/// Model dimensions a worker needs when it has no local model file.
public struct ModelHyperparameters: Equatable, Sendable {
    public var layerCount: UInt32
    public var embeddingWidth: UInt32
    public var feedForwardWidth: UInt32
    public var headCount: UInt32
    public var kvHeadCount: UInt32
    public var vocabularySize: UInt32
    public var trainingContextLength: UInt32
    public var ropeFreqBase: Float
    public var rmsNormEpsilon: Float
    public var ropeDimensionCount: UInt32

    public init(
        layerCount: UInt32, embeddingWidth: UInt32, feedForwardWidth: UInt32, headCount: UInt32,
        kvHeadCount: UInt32, vocabularySize: UInt32, trainingContextLength: UInt32,
        ropeFreqBase: Float, rmsNormEpsilon: Float, ropeDimensionCount: UInt32 = 0
    ) {
        self.ropeDimensionCount = ropeDimensionCount
        self.layerCount = layerCount
        self.embeddingWidth = embeddingWidth
        self.feedForwardWidth = feedForwardWidth
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.vocabularySize = vocabularySize
        self.trainingContextLength = trainingContextLength
        self.ropeFreqBase = ropeFreqBase
        self.rmsNormEpsilon = rmsNormEpsilon
    }
}

/// How a worker's KV cache stores keys and values.
public enum KVCacheDType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f16 = 0
    case f32 = 1

    public var description: String { self == .f16 ? "f16" : "f32" }
}

/// Coordinator → worker: the layers a worker runs and how its pipeline sockets are wired.
///
/// Decoding guarantees `layerBegin < layerEnd`.
public struct ShardAssignment: Equatable, Sendable {
    public var layerBegin: UInt32
    /// Exclusive.
    public var layerEnd: UInt32
    public var modelFingerprint: String
    public var activationDType: ActivationDType
    public var maxSequences: UInt32
    public var contextLength: UInt32
    /// Where activations come from.
    public var input: PipelineEndpoint
    /// Where activations go to.
    public var output: PipelineEndpoint
    /// Whether the coordinator streams the shard's tensors (``TensorChunk``) instead of the
    /// worker reading a local model file.
    public var streamWeights: Bool
    /// Model dimensions, needed by a worker without a local model file.
    public var hyperparameters: ModelHyperparameters?
    /// The pipeline epoch: frames whose `stepID >> 40` differs are dropped.
    public var epoch: UInt32
    /// Most tokens in one frame.
    public var maxBatch: UInt32
    /// How the worker's KV cache stores keys and values.
    public var kvCacheDType: KVCacheDType
    /// CURVE keys (Z85) allowed to send to the worker's data input (empty without security).
    public var inputPeerKeys: [String]
    /// CURVE key of the socket `output` reaches (empty without security).
    public var outputServerKey: String
    /// Seconds without a word from the coordinator before the worker reconnects.
    public var heartbeatTimeout: Double

    public init(
        layerBegin: UInt32, layerEnd: UInt32, modelFingerprint: String, activationDType: ActivationDType,
        maxSequences: UInt32, contextLength: UInt32, input: PipelineEndpoint, output: PipelineEndpoint,
        streamWeights: Bool, hyperparameters: ModelHyperparameters? = nil, epoch: UInt32 = 0, maxBatch: UInt32 = 512,
        kvCacheDType: KVCacheDType = .f16, inputPeerKeys: [String] = [], outputServerKey: String = "",
        heartbeatTimeout: Double = 5
    ) {
        self.kvCacheDType = kvCacheDType
        self.inputPeerKeys = inputPeerKeys
        self.outputServerKey = outputServerKey
        self.heartbeatTimeout = heartbeatTimeout
        self.epoch = epoch
        self.maxBatch = maxBatch
        self.layerBegin = layerBegin
        self.layerEnd = layerEnd
        self.modelFingerprint = modelFingerprint
        self.activationDType = activationDType
        self.maxSequences = maxSequences
        self.contextLength = contextLength
        self.input = input
        self.output = output
        self.streamWeights = streamWeights
        self.hyperparameters = hyperparameters
    }
}

/// Worker → coordinator: the shard is loaded and the pipeline sockets are up.
///
/// Decoding guarantees `layerBegin < layerEnd`.
public struct Ready: Equatable, Sendable {
    public var layerBegin: UInt32
    /// Exclusive.
    public var layerEnd: UInt32
    public var residentBytes: UInt64
    /// The assignment epoch this worker is ready for.
    public var epoch: UInt32

    public init(layerBegin: UInt32, layerEnd: UInt32, residentBytes: UInt64, epoch: UInt32 = 0) {
        self.epoch = epoch
        self.layerBegin = layerBegin
        self.layerEnd = layerEnd
        self.residentBytes = residentBytes
    }
}

/// Both directions: liveness and load statistics.
public struct Heartbeat: Equatable, Sendable {
    public var sequence: UInt64
    /// Sender's clock, nanoseconds since the Unix epoch.
    public var unixTimeNanos: UInt64
    public var tokensProcessed: UInt64
    public var busySeconds: Double

    public init(sequence: UInt64, unixTimeNanos: UInt64, tokensProcessed: UInt64, busySeconds: Double) {
        self.sequence = sequence
        self.unixTimeNanos = unixTimeNanos
        self.tokensProcessed = tokensProcessed
        self.busySeconds = busySeconds
    }
}

/// Coordinator → worker: forget the KV cache of these sequences.
public struct SequenceRelease: Equatable, Sendable {
    public var sequenceIDs: [Int32]

    public init(sequenceIDs: [Int32]) {
        self.sequenceIDs = sequenceIDs
    }
}

/// Coordinator → workers, through the data pipeline: copy positions `0..<count` of one
/// sequence's KV cache into another.
public struct SequenceCopy: Equatable, Sendable {
    public var source: Int32
    public var destination: Int32
    public var count: UInt32

    public init(source: Int32, destination: Int32, count: UInt32) {
        self.source = source
        self.destination = destination
        self.count = count
    }
}

/// Coordinator → worker: time one layer of this shape and weight type.
public struct CalibrationRequest: Equatable, Sendable {
    public var hyperparameters: ModelHyperparameters
    public var ggmlType: UInt32

    public init(hyperparameters: ModelHyperparameters, ggmlType: UInt32) {
        self.hyperparameters = hyperparameters
        self.ggmlType = ggmlType
    }
}

/// Worker → coordinator: seconds one layer took (one token; per token of a batch).
public struct CalibrationResult: Equatable, Sendable {
    public var layerDecodeSeconds: Double
    public var layerPrefillSeconds: Double

    public init(layerDecodeSeconds: Double, layerPrefillSeconds: Double) {
        self.layerDecodeSeconds = layerDecodeSeconds
        self.layerPrefillSeconds = layerPrefillSeconds
    }
}

/// Both directions: the sender stops; the receiver should stop too.
public struct Shutdown: Equatable, Sendable {
    public var reason: String

    public init(reason: String) {
        self.reason = reason
    }
}

/// Both directions: something went wrong.
public struct ErrorReport: Equatable, Sendable {
    /// Machine-readable reason. Unknown values received from newer peers are kept as they are.
    public struct Code: RawRepresentable, Equatable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let unspecified = Code(rawValue: 0)
        /// A frame could not be decoded or was inconsistent.
        public static let badFrame = Code(rawValue: 1)
        /// Peers speak different protocol versions.
        public static let protocolVersion = Code(rawValue: 2)
        /// The model fingerprint differs from the expected one.
        public static let modelMismatch = Code(rawValue: 3)
        /// The shard does not fit the memory budget.
        public static let outOfMemory = Code(rawValue: 4)
        /// The shard assignment cannot be honoured.
        public static let invalidAssignment = Code(rawValue: 5)
        /// Weights are missing, corrupt or of an unsupported type.
        public static let weights = Code(rawValue: 6)
        /// Any other failure.
        public static let `internal` = Code(rawValue: 7)
        /// The coordinator does not know the sender: it should join again.
        public static let notJoined = Code(rawValue: 8)

        public var description: String {
            switch self {
            case .unspecified: return "unspecified"
            case .badFrame: return "bad frame"
            case .protocolVersion: return "protocol version"
            case .modelMismatch: return "model mismatch"
            case .outOfMemory: return "out of memory"
            case .invalidAssignment: return "invalid assignment"
            case .weights: return "weights"
            case .internal: return "internal"
            case .notJoined: return "not joined"
            default: return "code \(rawValue)"
            }
        }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
}

/// Worker → coordinator: send these tensors (all tensors of the shard when `tensorNames` is empty).
public struct WeightRequest: Equatable, Sendable {
    /// The tensor wanted (one of the worker's layers).
    public var tensorName: String
    /// Byte offset in the tensor of the chunk wanted.
    public var offset: UInt64
    /// Largest `data` size of the ``TensorChunk`` reply; 0 asks only for the tensor's type, shape and size.
    public var maxChunkBytes: UInt32

    public init(tensorName: String, offset: UInt64 = 0, maxChunkBytes: UInt32 = 0) {
        self.tensorName = tensorName
        self.offset = offset
        self.maxChunkBytes = maxChunkBytes
    }
}

/// Coordinator → worker: a contiguous slice of one tensor's data.
///
/// The CRC-32C of `data` is computed when encoding and checked when decoding, so a
/// decoded chunk is known intact. Decoding also guarantees `offset + data.count <= totalSize`.
public struct TensorChunk: Equatable, Sendable {
    public var tensorName: String
    /// GGML type id as stored in GGUF.
    public var ggmlType: UInt32
    /// Dimensions in GGUF order (fastest varying first).
    public var shape: [UInt64]
    /// Byte offset of `data` within the tensor.
    public var offset: UInt64
    /// Byte size of the whole tensor.
    public var totalSize: UInt64
    public var data: [UInt8]

    public init(tensorName: String, ggmlType: UInt32, shape: [UInt64], offset: UInt64, totalSize: UInt64, data: [UInt8]) {
        self.tensorName = tensorName
        self.ggmlType = ggmlType
        self.shape = shape
        self.offset = offset
        self.totalSize = totalSize
        self.data = data
    }
}

/// Coordinator → worker: all requested tensors were sent.
public struct WeightsDone: Equatable, Sendable {
    public var tensorCount: UInt32
    public var totalBytes: UInt64

    public init(tensorCount: UInt32, totalBytes: UInt64) {
        self.tensorCount = tensorCount
        self.totalBytes = totalBytes
    }
}

// MARK: - Data pipeline

/// A batch of hidden states travelling from one pipeline stage to the next.
///
/// Token `i` belongs to sequence `sequenceIDs[i]` at position `positions[i]`; its hidden state
/// is `values[i * width ..< (i + 1) * width]`. `dtype` is the encoding on the wire: with
/// ``ActivationDType/f16`` the values are rounded to half precision when encoded, and a decoded
/// frame holds the exact float values of those halves.
///
/// A decoded frame always satisfies ``validate()``.
public struct ActivationFrame: Equatable, Sendable {
    /// Identifies the pipeline step this batch belongs to.
    public var stepID: UInt64
    /// Elements per token (the model's embedding width).
    public var width: Int
    /// Encoding of `values` on the wire.
    public var dtype: ActivationDType
    /// Sequence of each token.
    public var sequenceIDs: [Int32]
    /// Position of each token in its sequence.
    public var positions: [Int32]
    /// Which tokens need logits: empty, or one flag per token.
    public var needLogits: [Bool]
    /// `tokenCount * width` hidden-state values, row-major (token by token).
    public var values: [Float]

    /// Number of tokens in the batch.
    public var tokenCount: Int { sequenceIDs.count }

    public init(
        stepID: UInt64, width: Int, dtype: ActivationDType, sequenceIDs: [Int32], positions: [Int32],
        needLogits: [Bool] = [], values: [Float]
    ) {
        self.stepID = stepID
        self.width = width
        self.dtype = dtype
        self.sequenceIDs = sequenceIDs
        self.positions = positions
        self.needLogits = needLogits
        self.values = values
    }

    /// An empty frame, meant as a reusable destination for ``ActivationCodec/decode(_:into:)``.
    public init() {
        self.init(stepID: 0, width: 0, dtype: .f32, sequenceIDs: [], positions: [], values: [])
    }

    /// Bytes the hidden states take on the wire.
    public var payloadByteCount: Int { values.count * dtype.byteSize }

    /// Checks the invariants every decoded frame satisfies: at least one token, a positive
    /// width that fits the wire, one position (and zero or one logits flag) per token, and
    /// `tokenCount * width` values.
    public func validate() throws {
        if sequenceIDs.isEmpty {
            throw WireError.invalidValue(field: "n_tokens", reason: "a frame carries at least one token")
        }
        if width <= 0 || width > Int(UInt32.max) {
            throw WireError.invalidValue(field: "width", reason: "\(width) is not in 1...\(UInt32.max)")
        }
        if sequenceIDs.count > Int(UInt32.max) {
            throw WireError.invalidValue(field: "n_tokens", reason: "\(sequenceIDs.count) does not fit 32 bits")
        }
        if positions.count != tokenCount {
            throw WireError.countMismatch(field: "positions", count: positions.count, expected: tokenCount)
        }
        if !needLogits.isEmpty && needLogits.count != tokenCount {
            throw WireError.countMismatch(field: "need_logits", count: needLogits.count, expected: tokenCount)
        }
        let (expected, overflow) = tokenCount.multipliedReportingOverflow(by: width)
        if overflow || values.count != expected {
            throw WireError.countMismatch(field: "values", count: values.count, expected: overflow ? Int.max : expected)
        }
    }
}
