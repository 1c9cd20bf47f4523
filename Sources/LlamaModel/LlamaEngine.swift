import GGUF
import LlamaKernels

/// A model opened for inference in one process: the head and all layers.
///
/// This is the single-process path (`llama-coord serve`, `run`, `perplexity`, `bench`); the
/// cluster splits the same pieces between the coordinator (head) and workers (layer slices).
public final class LlamaEngine {
    public let file: GGUFFile
    public let config: LlamaConfig
    /// The beginning-of-text token id (`tokenizer.ggml.bos_token_id`, 1 when absent).
    public let bosID: Int32
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
        bosID = Int32(truncatingIfNeeded: file.metadata["tokenizer.ggml.bos_token_id"]?.int ?? 1)
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

    /// Runs a batch of tokens of several sequences (token `i` of sequence `sequenceIDs[i]` at
    /// `positions[i]`) and writes the logits of the rows flagged in `needLogits`, in row
    /// order, into `out` (room for that many rows of `vocabSize`). Allocates nothing once its
    /// scratch has grown to the largest batch.
    public func forward(tokens: UnsafeBufferPointer<Int32>, sequenceIDs: UnsafeBufferPointer<Int32>,
                        positions: UnsafeBufferPointer<Int32>, needLogits: UnsafeBufferPointer<Bool>,
                        into out: UnsafeMutablePointer<Float>) throws {
        let n = tokens.count, dim = config.dim
        if batchHidden.count < n * dim { batchHidden = [Float](repeating: 0, count: n * dim) }
        try batchHidden.withUnsafeMutableBufferPointer { h in
            try head.embed(tokens, into: h.baseAddress!)
            try slice.forward(hidden: h.baseAddress!, count: n, sequenceIDs: sequenceIDs, positions: positions)
            // Gather the wanted rows to the front, in order (a row never moves backwards past another).
            var w = 0
            for i in 0..<n where needLogits[i] {
                if w != i { (h.baseAddress! + w * dim).update(from: h.baseAddress! + i * dim, count: dim) }
                w += 1
            }
            if w > 0 { head.logits(hidden: h.baseAddress!, count: w, into: out) }
        }
    }

    private var batchHidden: [Float] = []
}
