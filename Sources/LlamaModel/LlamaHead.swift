import GGUF
import LlamaKernels

/// The coordinator's share of the model: the token embedding, the final norm and the output head.
public final class LlamaHead {
    public let config: LlamaConfig
    public let pool: ThreadPool
    private let embedding: WeightMatrix    // (vocab, dim)
    private let outputNorm: [Float]        // (dim)
    private let output: WeightMatrix       // (vocab, dim)
    private let scratch: MatmulScratch
    private let normed: UnsafeMutablePointer<Float>  // (maxBatch, dim)
    public let maxBatch: Int

    public init(file: GGUFFile, config: LlamaConfig, maxBatch: Int = 512, pool: ThreadPool) throws {
        let loader = LlamaTensorLoader(file: file, config: config)
        embedding = try loader.embedding()
        outputNorm = try loader.vector(LlamaTensorName.outputNorm, count: config.dim)
        output = try loader.outputHead()
        self.config = config
        self.pool = pool
        self.maxBatch = maxBatch
        scratch = MatmulScratch(maxCols: config.dim, maxBatch: maxBatch)
        normed = .allocate(capacity: maxBatch * config.dim)
    }

    deinit { normed.deallocate() }

    /// Writes the embeddings of `tokens` into `hidden` (count, dim).
    public func embed(_ tokens: UnsafeBufferPointer<Int32>, into hidden: UnsafeMutablePointer<Float>) throws {
        let dim = config.dim
        let rowBytes = embedding.type.byteCount(elements: dim)
        for (i, t) in tokens.enumerated() {
            guard t >= 0, Int(t) < config.vocabSize else {
                throw ModelError.sequence("token id \(t) is outside the vocabulary of \(config.vocabSize)")
            }
            dequantizeRow(embedding.type, embedding.data + Int(t) * rowBytes, hidden + i * dim, count: dim)
        }
    }

    /// Computes logits (count, vocab) of `count` hidden states (count, dim).
    public func logits(hidden: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        var start = 0
        while start < count {
            let n = min(maxBatch, count - start)
            rmsNorm(hidden + start * config.dim, count: n, dim: config.dim, weight: outputNorm,
                    epsilon: config.rmsEpsilon, out: normed)
            matmul(output, input: normed, batch: n, output: out + start * config.vocabSize, pool: pool, scratch: scratch)
            start += n
        }
    }
}
