import GGUF

/// Errors in a model's configuration or tensors.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    case wrongArchitecture(String)
    case invalidConfig(key: String, reason: String)
    case tensorShape(tensor: String, expected: [Int], found: [Int])
    case tensorType(tensor: String, type: GGMLType)
    case layerRange(String)
    case promptTooLong(tokens: Int, context: Int)
    case sequence(String)

    public var description: String {
        switch self {
        case .wrongArchitecture(let a): return "general.architecture is \(a.debugDescription); this engine runs \"llama\" models"
        case .invalidConfig(let k, let r): return "invalid model configuration: \(k): \(r)"
        case .tensorShape(let t, let e, let f): return "tensor \(t.debugDescription) has shape \(f), expected \(e) from the configuration"
        case .tensorType(let t, let ty): return "tensor \(t.debugDescription) has type \(ty), which this engine does not compute with"
        case .layerRange(let r): return "invalid layer range: \(r)"
        case .promptTooLong(let n, let c): return "the prompt has \(n) tokens but the context holds \(c)"
        case .sequence(let r): return "sequence error: \(r)"
        }
    }
}

/// The shape and constants of a Llama 2 model, read from `llama.*` GGUF metadata and validated.
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var vocabSize: Int
    /// Width of the residual stream (`embedding_length`).
    public var dim: Int
    /// Hidden width of the feed-forward network.
    public var ffnDim: Int
    public var layerCount: Int
    public var headCount: Int
    /// Key/value heads; fewer than `headCount` means grouped-query attention.
    public var kvHeadCount: Int
    public var headDim: Int
    /// Dimensions of each head that RoPE rotates.
    public var ropeDim: Int
    public var ropeBase: Float
    public var rmsEpsilon: Float
    public var contextLength: Int

    /// Width of the keys (and values) of one token in one layer.
    public var kvDim: Int { kvHeadCount * headDim }

    public init(vocabSize: Int, dim: Int, ffnDim: Int, layerCount: Int, headCount: Int, kvHeadCount: Int,
                ropeDim: Int? = nil, ropeBase: Float = 10000, rmsEpsilon: Float = 1e-5, contextLength: Int) throws {
        self.vocabSize = vocabSize
        self.dim = dim
        self.ffnDim = ffnDim
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headCount > 0 ? dim / headCount : 0
        self.ropeDim = ropeDim ?? (headCount > 0 ? dim / headCount : 0)
        self.ropeBase = ropeBase
        self.rmsEpsilon = rmsEpsilon
        self.contextLength = contextLength
        try validate()
    }

    /// Reads and validates the configuration of a Llama GGUF file.
    public init(gguf file: GGUFFile) throws {
        let arch = try file.string("general.architecture")
        guard arch == "llama" else { throw ModelError.wrongArchitecture(arch) }
        let dim = try file.int("llama.embedding_length")
        let heads = try file.int("llama.attention.head_count")
        let vocab: Int
        if let v = file.metadata["llama.vocab_size"]?.int {
            vocab = v
        } else if let tokens = file.metadata["tokenizer.ggml.tokens"]?.array {
            vocab = tokens.count
        } else if let emb = file.tensor(named: "token_embd.weight"), emb.shape.count == 2 {
            vocab = emb.shape[1]
        } else {
            throw GGUFError.missingKey("llama.vocab_size")
        }
        try self.init(
            vocabSize: vocab,
            dim: dim,
            ffnDim: try file.int("llama.feed_forward_length"),
            layerCount: try file.int("llama.block_count"),
            headCount: heads,
            kvHeadCount: file.metadata["llama.attention.head_count_kv"] != nil ? try file.int("llama.attention.head_count_kv") : heads,
            ropeDim: file.metadata["llama.rope.dimension_count"] != nil ? try file.int("llama.rope.dimension_count") : nil,
            ropeBase: file.metadata["llama.rope.freq_base"] != nil ? try file.float("llama.rope.freq_base") : 10000,
            rmsEpsilon: try file.float("llama.attention.layer_norm_rms_epsilon"),
            contextLength: try file.int("llama.context_length"))
    }

    func validate() throws {
        func check(_ ok: Bool, _ key: String, _ reason: @autoclosure () -> String) throws {
            if !ok { throw ModelError.invalidConfig(key: key, reason: reason()) }
        }
        try check(vocabSize > 0, "vocab_size", "\(vocabSize) must be positive")
        try check(dim > 0, "llama.embedding_length", "\(dim) must be positive")
        try check(ffnDim > 0, "llama.feed_forward_length", "\(ffnDim) must be positive")
        try check(layerCount > 0, "llama.block_count", "\(layerCount) must be positive")
        try check(headCount > 0, "llama.attention.head_count", "\(headCount) must be positive")
        try check(dim % headCount == 0, "llama.attention.head_count", "\(headCount) does not divide the width \(dim)")
        try check(kvHeadCount > 0 && headCount % kvHeadCount == 0, "llama.attention.head_count_kv",
                  "\(kvHeadCount) must be positive and divide head_count \(headCount)")
        try check(ropeDim > 0 && ropeDim <= headDim && ropeDim % 2 == 0, "llama.rope.dimension_count",
                  "\(ropeDim) must be even and at most the head size \(headDim)")
        try check(ropeBase.isFinite && ropeBase > 0, "llama.rope.freq_base", "\(ropeBase) must be positive")
        try check(rmsEpsilon.isFinite && rmsEpsilon > 0, "llama.attention.layer_norm_rms_epsilon", "\(rmsEpsilon) must be positive")
        try check(contextLength > 0, "llama.context_length", "\(contextLength) must be positive")
    }
}

/// A half-open range of transformer layers, `lo..<hi`, that one process runs.
public struct LayerRange: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public let lo: Int
    public let hi: Int

    public init(_ lo: Int, _ hi: Int) {
        self.lo = lo
        self.hi = hi
    }

    public init(_ r: Range<Int>) { self.init(r.lowerBound, r.upperBound) }

    public var range: Range<Int> { lo..<hi }
    public var count: Int { hi - lo }
    public var description: String { "\(lo)..<\(hi)" }

    /// Checks that the range is non-empty and within a model of `layerCount` layers.
    public func validate(layerCount: Int) throws {
        guard lo >= 0, hi > lo, hi <= layerCount else {
            throw ModelError.layerRange("\(self) is not a non-empty range within the model's \(layerCount) layers")
        }
    }
}
