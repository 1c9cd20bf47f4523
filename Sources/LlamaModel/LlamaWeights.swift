import GGUF
import LlamaKernels

/// GGUF tensor names of the Llama architecture.
public enum LlamaTensorName {
    public static let tokenEmbedding = "token_embd.weight"
    public static let outputNorm = "output_norm.weight"
    public static let output = "output.weight"

    public static func layer(_ i: Int, _ part: String) -> String { "blk.\(i).\(part).weight" }
    /// The per-layer tensor parts, in the order a layer uses them.
    public static let layerParts = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]

    /// Every tensor name a layer range needs.
    public static func names(layers: LayerRange) -> [String] {
        layers.range.flatMap { i in layerParts.map { layer(i, $0) } }
    }
}

/// The weights of one transformer layer: pointers into the mapped file, norms copied out as f32.
public struct LayerWeights {
    public let attentionNorm: [Float]   // (dim)
    public let wq: WeightMatrix         // (dim -> dim)
    public let wk: WeightMatrix         // (dim -> kvDim)
    public let wv: WeightMatrix         // (dim -> kvDim)
    public let wo: WeightMatrix         // (dim -> dim)
    public let ffnNorm: [Float]         // (dim)
    public let w1: WeightMatrix         // gate (dim -> ffn)
    public let w3: WeightMatrix         // up (dim -> ffn)
    public let w2: WeightMatrix         // down (ffn -> dim)
}

/// Reading and shape-checking tensors of a Llama GGUF file.
public struct LlamaTensorLoader {
    public let file: GGUFFile
    public let config: LlamaConfig

    /// The model's fingerprint when repacked copies are on (`RepackedWeights`).
    private let repackFingerprint: String?

    public init(file: GGUFFile, config: LlamaConfig) {
        self.file = file
        self.config = config
        repackFingerprint = RepackedWeights.isEnabled ? file.fingerprint : nil
    }

    /// A matrix of `rows` outputs by `cols` inputs (GGML shape [cols, rows]).
    public func matrix(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
        let t = try file.requireTensor(name)
        guard t.shape == [cols, rows] else { throw ModelError.tensorShape(tensor: name, expected: [cols, rows], found: t.shape) }
        guard t.type.isSupported else { throw ModelError.tensorType(tensor: name, type: t.type) }
        let m = WeightMatrix(type: t.type, rows: rows, cols: cols, data: file.data(for: t).baseAddress!)
        // The embedding is only read a row at a time, never multiplied.
        guard let repackFingerprint, name != LlamaTensorName.tokenEmbedding else { return m }
        return try RepackedWeights.attach(m, name: name, fingerprint: repackFingerprint)
    }

    /// A vector of `count` values, converted to f32.
    public func vector(_ name: String, count: Int) throws -> [Float] {
        let t = try file.requireTensor(name)
        guard t.shape == [count] else { throw ModelError.tensorShape(tensor: name, expected: [count], found: t.shape) }
        guard t.type.isSupported else { throw ModelError.tensorType(tensor: name, type: t.type) }
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { dequantizeRow(t.type, file.data(for: t).baseAddress!, $0.baseAddress!, count: count) }
        return out
    }

    public func layer(_ i: Int) throws -> LayerWeights {
        let c = config
        return LayerWeights(
            attentionNorm: try vector(LlamaTensorName.layer(i, "attn_norm"), count: c.dim),
            wq: try matrix(LlamaTensorName.layer(i, "attn_q"), rows: c.dim, cols: c.dim),
            wk: try matrix(LlamaTensorName.layer(i, "attn_k"), rows: c.kvDim, cols: c.dim),
            wv: try matrix(LlamaTensorName.layer(i, "attn_v"), rows: c.kvDim, cols: c.dim),
            wo: try matrix(LlamaTensorName.layer(i, "attn_output"), rows: c.dim, cols: c.dim),
            ffnNorm: try vector(LlamaTensorName.layer(i, "ffn_norm"), count: c.dim),
            w1: try matrix(LlamaTensorName.layer(i, "ffn_gate"), rows: c.ffnDim, cols: c.dim),
            w3: try matrix(LlamaTensorName.layer(i, "ffn_up"), rows: c.ffnDim, cols: c.dim),
            w2: try matrix(LlamaTensorName.layer(i, "ffn_down"), rows: c.dim, cols: c.ffnDim))
    }

    /// The embedding table (vocab rows of width dim).
    public func embedding() throws -> WeightMatrix {
        try matrix(LlamaTensorName.tokenEmbedding, rows: config.vocabSize, cols: config.dim)
    }

    /// The output head, falling back to the tied embedding when `output.weight` is absent.
    public func outputHead() throws -> WeightMatrix {
        let name = file.tensor(named: LlamaTensorName.output) != nil ? LlamaTensorName.output : LlamaTensorName.tokenEmbedding
        return try matrix(name, rows: config.vocabSize, cols: config.dim)
    }
}
