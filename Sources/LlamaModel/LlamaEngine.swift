import GGUF
import LlamaKernels
import LlamaTokenizer

/// A model opened for inference in one process: tokenizer, head and all layers.
///
/// This is the single-process path (`llama-coord run`); the cluster splits the same
/// pieces between the coordinator (head, tokenizer) and workers (layer slices).
public final class LlamaEngine {
    public let file: GGUFFile
    public let config: LlamaConfig
    public let tokenizer: LlamaTokenizer
    public let head: LlamaHead
    public let slice: LayerSlice
    public let pool: ThreadPool
    /// Positions each sequence can hold.
    public var contextLength: Int { slice.cache.contextLength }

    private var hidden: [Float]

    /// - Parameters:
    ///   - threads: compute threads (default: all cores).
    ///   - contextLength: positions per sequence (default: the model's).
    ///   - kvCache: how the KV cache stores keys and values (default: halves, as llama.cpp).
    public init(path: String, threads: Int? = nil, maxSequences: Int = 1, contextLength: Int? = nil,
                maxBatch: Int = 512, kvCache: KVCacheType = .f16) throws {
        file = try GGUFFile(path: path)
        config = try LlamaConfig(gguf: file)
        tokenizer = LlamaTokenizer(vocabulary: try Vocabulary(gguf: file))
        guard tokenizer.vocabularySize == config.vocabSize else {
            throw ModelError.invalidConfig(key: "tokenizer.ggml.tokens",
                                           reason: "\(tokenizer.vocabularySize) tokens but the model has a vocabulary of \(config.vocabSize)")
        }
        pool = ThreadPool(threadCount: threads ?? defaultThreadCount)
        let ctx = contextLength ?? config.contextLength
        head = try LlamaHead(file: file, config: config, maxBatch: maxBatch, pool: pool)
        slice = try LayerSlice(file: file, config: config, layers: LayerRange(0, config.layerCount),
                               maxSequences: maxSequences, contextLength: ctx, maxBatch: maxBatch, kvCache: kvCache, pool: pool)
        hidden = [Float](repeating: 0, count: maxBatch * config.dim)
    }

    /// Which positions of an evaluated batch need logits.
    public enum LogitsWanted {
        case last
        case all
        case from(Int)
    }

    /// Runs `tokens` of one sequence starting at `startPosition` and returns the logits requested,
    /// row-major (positions, vocab).
    @discardableResult
    public func evaluate(_ tokens: [Int32], sequence: Int32 = 0, startPosition: Int, logits wanted: LogitsWanted = .last) throws -> [Float] {
        let first = firstWanted(wanted, count: tokens.count)
        var out = [Float](repeating: 0, count: (tokens.count - first) * config.vocabSize)
        try out.withUnsafeMutableBufferPointer {
            try evaluate(tokens, sequence: sequence, startPosition: startPosition, logits: wanted, into: $0.baseAddress!)
        }
        return out
    }

    /// As `evaluate`, writing the logits into `out` (room for the rows requested); allocates nothing.
    public func evaluate(_ tokens: [Int32], sequence: Int32 = 0, startPosition: Int, logits wanted: LogitsWanted,
                         into out: UnsafeMutablePointer<Float>) throws {
        guard !tokens.isEmpty else { throw ModelError.sequence("nothing to evaluate") }
        guard startPosition + tokens.count <= contextLength else {
            throw ModelError.promptTooLong(tokens: startPosition + tokens.count, context: contextLength)
        }
        let first = firstWanted(wanted, count: tokens.count)
        let vocab = config.vocabSize
        let chunk = slice.maxBatch
        var start = 0
        while start < tokens.count {
            let n = min(chunk, tokens.count - start)
            try hidden.withUnsafeMutableBufferPointer { h in
                try tokens.withUnsafeBufferPointer { t in
                    try head.embed(UnsafeBufferPointer(rebasing: t[start..<start + n]), into: h.baseAddress!)
                }
                try slice.forward(hidden: h.baseAddress!, count: n, sequence: sequence, startPosition: startPosition + start)
                // Logits only for wanted positions in this chunk.
                let lo = max(first, start), hi = start + n
                if lo < hi {
                    head.logits(hidden: h.baseAddress! + (lo - start) * config.dim, count: hi - lo,
                                into: out + (lo - first) * vocab)
                }
            }
            start += n
        }
    }

    private func firstWanted(_ wanted: LogitsWanted, count: Int) -> Int {
        switch wanted {
        case .last: return count - 1
        case .all: return 0
        case .from(let f): return max(0, min(f, count - 1))
        }
    }

    /// Forgets a sequence's cache.
    public func reset(sequence: Int32 = 0) { slice.release(sequence: sequence) }
}
