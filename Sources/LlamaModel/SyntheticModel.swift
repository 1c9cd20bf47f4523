import GGUF
import LlamaKernels

/// Writes random-weight Llama GGUF files of any shape, with a real vocabulary, for tests and benchmarks.
///
/// Weights are uniform random with a variance that keeps activations at unit scale through
/// the layers; the output head is scaled so logits have a standard deviation of about 4,
/// which makes the top token stand well clear of the next and greedy decoding stable
/// across implementations that round differently.
public struct SyntheticModel {
    /// Named shapes of real Llama 2 models.
    public enum Preset: String, CaseIterable, Sendable {
        case llama2_7b = "7b"
        case llama2_13b = "13b"
        case llama2_70b = "70b"

        public var shape: (dim: Int, heads: Int, kvHeads: Int, ffn: Int, layers: Int) {
            switch self {
            case .llama2_7b: return (4096, 32, 32, 11008, 32)
            case .llama2_13b: return (5120, 40, 40, 13824, 40)
            case .llama2_70b: return (8192, 64, 8, 28672, 80)
            }
        }
    }

    public var dim: Int
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var ffn: Int
    public var context: Int
    /// Type of the large matrices (norms stay F32).
    public var type: GGMLType
    /// Type of the embedding and output head (default: same as `type`).
    public var embeddingType: GGMLType?
    public var seed: UInt64
    /// Whether to write `output.weight` (otherwise the head is tied to the embedding).
    public var untiedOutput: Bool

    public init(dim: Int = 64, layers: Int = 2, heads: Int = 4, kvHeads: Int? = nil, ffn: Int? = nil,
                context: Int = 256, type: GGMLType = .f32, embeddingType: GGMLType? = nil, seed: UInt64 = 1,
                untiedOutput: Bool = true) {
        self.dim = dim
        self.layers = layers
        self.heads = heads
        self.kvHeads = kvHeads ?? heads
        self.ffn = ffn ?? dim * 8 / 3 / 32 * 32
        self.context = context
        self.type = type
        self.embeddingType = embeddingType
        self.seed = seed
        self.untiedOutput = untiedOutput
    }

    public init(preset: Preset, layers: Int, context: Int = 4096, type: GGMLType, seed: UInt64 = 1) {
        let s = preset.shape
        self.init(dim: s.dim, layers: layers, heads: s.heads, kvHeads: s.kvHeads, ffn: s.ffn, context: context,
                  type: type, seed: seed)
    }

    /// Writes the model to `path`, taking the tokenizer from the vocabulary GGUF `vocab`.
    /// `progress` gets (tensors written, tensor count).
    public func write(to path: String, vocab: GGUFFile, pool: ThreadPool, progress: ((Int, Int) -> Void)? = nil) throws {
        guard let tokens = vocab.metadata["tokenizer.ggml.tokens"]?.array else {
            throw GGUFError.missingKey("tokenizer.ggml.tokens")
        }
        try write(to: path, vocabularySize: tokens.count, tokenizer: vocab, pool: pool, progress: progress)
    }

    /// Writes the model with a vocabulary of `vocabularySize` ids and no tokenizer (enough to
    /// time its layers).
    public func write(to path: String, vocabularySize: Int, pool: ThreadPool) throws {
        try write(to: path, vocabularySize: vocabularySize, tokenizer: nil, pool: pool, progress: nil)
    }

    private func write(to path: String, vocabularySize vocabSize: Int, tokenizer vocab: GGUFFile?, pool: ThreadPool,
                       progress: ((Int, Int) -> Void)?) throws {
        let config = try LlamaConfig(vocabSize: vocabSize, dim: dim, ffnDim: ffn, layerCount: layers, headCount: heads,
                                     kvHeadCount: kvHeads, contextLength: context)
        for (t, name) in [(type, "--type"), (embeddingType ?? type, "embedding type")] where !t.isSupported {
            throw ModelError.invalidConfig(key: name, reason: "\(t) is not supported")
        }
        for (n, what) in [(dim, "dim"), (ffn, "ffn")] where n % type.blockSize != 0 {
            throw ModelError.invalidConfig(key: what, reason: "\(n) is not a multiple of the \(type) block size \(type.blockSize)")
        }
        let w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.name", .string("synthetic-llama-\(dim)x\(layers)-\(type)"))
        w.set("llama.vocab_size", .uint32(UInt32(vocabSize)))
        w.set("llama.context_length", .uint32(UInt32(context)))
        w.set("llama.embedding_length", .uint32(UInt32(dim)))
        w.set("llama.block_count", .uint32(UInt32(layers)))
        w.set("llama.feed_forward_length", .uint32(UInt32(ffn)))
        w.set("llama.attention.head_count", .uint32(UInt32(heads)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(kvHeads)))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(1e-5))
        w.set("llama.rope.freq_base", .float32(10000))
        w.set("llama.rope.dimension_count", .uint32(UInt32(config.headDim)))
        if let vocab {
            for key in vocab.metadataKeys where key.hasPrefix("tokenizer.") { w.set(key, vocab.metadata[key]!) }
        }

        var tensorSeed = seed
        func matrix(_ name: String, rows: Int, cols: Int, scale: Float, type: GGMLType) {
            tensorSeed &+= 0x9E37_79B9_7F4A_7C15
            let s = tensorSeed
            w.addTensor(name: name, type: type, shape: [cols, rows]) { buffer in
                Self.fillRandom(buffer, rows: rows, cols: cols, scale: scale, type: type, seed: s, pool: pool)
            }
        }
        func norm(_ name: String) {
            tensorSeed &+= 0x9E37_79B9_7F4A_7C15
            let s = tensorSeed
            w.addTensor(name: name, type: .f32, shape: [dim]) { buffer in
                // Around 1, so layers differ but stay well conditioned.
                var rng = SplitMix64(seed: s)
                let out = buffer.bindMemory(to: Float.self)
                for i in 0..<dim { out[i] = 0.8 + 0.4 * rng.nextUnitFloat() }
            }
        }
        // Uniform on [-a, a] has standard deviation a/sqrt(3).
        let unit = Float(3).squareRoot()
        let embType = embeddingType ?? type
        matrix(LlamaTensorName.tokenEmbedding, rows: vocabSize, cols: dim, scale: unit, type: embType)
        for i in 0..<layers {
            let inScale = unit / Float(dim).squareRoot()
            norm(LlamaTensorName.layer(i, "attn_norm"))
            matrix(LlamaTensorName.layer(i, "attn_q"), rows: dim, cols: dim, scale: inScale, type: type)
            matrix(LlamaTensorName.layer(i, "attn_k"), rows: config.kvDim, cols: dim, scale: inScale, type: type)
            matrix(LlamaTensorName.layer(i, "attn_v"), rows: config.kvDim, cols: dim, scale: inScale, type: type)
            matrix(LlamaTensorName.layer(i, "attn_output"), rows: dim, cols: dim, scale: inScale * 0.5, type: type)
            norm(LlamaTensorName.layer(i, "ffn_norm"))
            matrix(LlamaTensorName.layer(i, "ffn_gate"), rows: ffn, cols: dim, scale: inScale, type: type)
            matrix(LlamaTensorName.layer(i, "ffn_up"), rows: ffn, cols: dim, scale: inScale, type: type)
            matrix(LlamaTensorName.layer(i, "ffn_down"), rows: dim, cols: ffn, scale: unit / Float(ffn).squareRoot(), type: type)
        }
        norm(LlamaTensorName.outputNorm)
        if untiedOutput {
            matrix(LlamaTensorName.output, rows: vocabSize, cols: dim, scale: 4 * unit / Float(dim).squareRoot(), type: embType)
        }
        try w.write(to: path, progress: progress)
    }

    /// Fills a (rows, cols) tensor of `type` with uniform values in [-scale, scale], row by row
    /// in parallel; each row has its own generator so the result does not depend on threads.
    static func fillRandom(_ buffer: UnsafeMutableRawBufferPointer, rows: Int, cols: Int, scale: Float, type: GGMLType,
                           seed: UInt64, pool: ThreadPool) {
        let rowBytes = type.byteCount(elements: cols)
        let threads = pool.threadCount
        let base = buffer.baseAddress!
        pool.parallelFor(threads) { chunk in
            let row = UnsafeMutablePointer<Float>.allocate(capacity: cols)
            defer { row.deallocate() }
            for r in (rows * chunk / threads)..<(rows * (chunk + 1) / threads) {
                var rng = SplitMix64(seed: seed ^ (UInt64(r) &* 0xD1B5_4A32_D192_ED03))
                for j in 0..<cols { row[j] = (2 * rng.nextUnitFloat() - 1) * scale }
                quantizeRow(type, row, base + r * rowBytes, count: cols)
            }
        }
    }
}

/// A small, fast, seedable generator (SplitMix64).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    @inline(__always)
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    @inline(__always)
    mutating func nextUnitFloat() -> Float { Float(next() >> 40) * (1 / Float(1 << 24)) }
}

/// Writes the model of `file` cut to its first `layers` layers (embedding, final norm and
/// output head kept): a draft model with the same vocabulary for speculative decoding that
/// agrees with the whole model where its early layers already decide.
public func writeFirstLayers(of file: GGUFFile, layers: Int, to path: String) throws {
    let config = try LlamaConfig(gguf: file)
    guard layers >= 1, layers < config.layerCount else {
        throw ModelError.invalidConfig(key: "llama.block_count",
                                       reason: "cannot keep \(layers) of the model's \(config.layerCount) layers (1...\(config.layerCount - 1))")
    }
    let writer = GGUFWriter(alignment: file.alignment)
    for key in file.metadataKeys where key != "general.alignment" {
        writer.set(key, key == "llama.block_count" ? .uint32(UInt32(layers)) : file.metadata[key]!)
    }
    if let name = file.metadata["general.name"]?.string { writer.set("general.name", .string("\(name) (first \(layers) layers)")) }
    for t in file.tensors {
        if t.name.hasPrefix("blk."), let n = Int(t.name.dropFirst(4).prefix { $0.isNumber }), n >= layers { continue }
        writer.addTensor(name: t.name, type: t.type, shape: t.shape) { out in
            out.copyMemory(from: file.data(for: t))
        }
    }
    try writer.write(to: path)
}
