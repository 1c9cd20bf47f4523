#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GGUF
import LlamaKernels

/// A contiguous range of transformer layers with its own KV cache: what one worker runs.
///
/// `forward` takes a batch of hidden states, each token with its own sequence id (a KV-cache
/// slot) and position, and runs every layer of the slice over it in place. All scratch
/// memory is allocated once here; a forward step allocates nothing.
public final class LayerSlice {
    public let config: LlamaConfig
    public let layers: LayerRange
    public let cache: KVCache
    public let maxBatch: Int
    public let pool: ThreadPool

    private let weights: [LayerWeights]
    private let scratch: MatmulScratch

    // Scratch, each (maxBatch, width):
    private let xb: UnsafeMutablePointer<Float>     // (batch, dim) normalized input
    private let q: UnsafeMutablePointer<Float>      // (batch, dim)
    private let k: UnsafeMutablePointer<Float>      // (batch, kvDim)
    private let v: UnsafeMutablePointer<Float>      // (batch, kvDim)
    private let att: UnsafeMutablePointer<Float>    // (batch, dim) attention output
    private let h1: UnsafeMutablePointer<Float>     // (batch, ffn)
    private let h3: UnsafeMutablePointer<Float>     // (batch, ffn)
    private let rope: UnsafeMutablePointer<Float>   // (batch, ropeDim/2, 2) cos, sin
    private let scores: UnsafeMutablePointer<Float> // (threads, query heads, context)
    private var slots = [Int](), positions = [Int]()
    private var batchNext: [Int]

    /// - Parameters:
    ///   - file: the mapped model; only this slice's tensors are read.
    ///   - layers: which layers to run.
    ///   - maxSequences: KV-cache slots (sequence ids `0..<maxSequences`).
    ///   - contextLength: positions per slot (at most the model's context length).
    ///   - maxBatch: most tokens processed in one pass; longer batches are split.
    ///   - kvCache: how the KV cache stores keys and values.
    public init(file: GGUFFile, config: LlamaConfig, layers: LayerRange, maxSequences: Int = 1,
                contextLength: Int? = nil, maxBatch: Int = 512, kvCache: KVCacheType = .f16, pool: ThreadPool) throws {
        try layers.validate(layerCount: config.layerCount)
        let ctx = contextLength ?? config.contextLength
        guard ctx > 0 else { throw ModelError.invalidConfig(key: "context", reason: "\(ctx) must be positive") }
        guard maxSequences > 0 else { throw ModelError.invalidConfig(key: "max_sequences", reason: "\(maxSequences) must be positive") }
        let loader = LlamaTensorLoader(file: file, config: config)
        weights = try layers.range.map { try loader.layer($0) }
        self.config = config
        self.layers = layers
        self.maxBatch = maxBatch
        self.pool = pool
        cache = KVCache(layerCount: layers.count, maxSequences: maxSequences, contextLength: ctx, kvDim: config.kvDim, type: kvCache)
        scratch = MatmulScratch(maxCols: max(config.dim, config.ffnDim), maxBatch: maxBatch)
        func buffer(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        xb = buffer(maxBatch * config.dim)
        q = buffer(maxBatch * config.dim)
        k = buffer(maxBatch * config.kvDim)
        v = buffer(maxBatch * config.kvDim)
        att = buffer(maxBatch * config.dim)
        h1 = buffer(maxBatch * config.ffnDim)
        h3 = buffer(maxBatch * config.ffnDim)
        rope = buffer(maxBatch * config.ropeDim)
        scores = buffer(pool.threadCount * config.headCount * ctx)
        batchNext = [Int](repeating: -1, count: maxSequences)
        slots.reserveCapacity(maxBatch)
        positions.reserveCapacity(maxBatch)
    }

    deinit {
        for p in [xb, q, k, v, att, h1, h3, rope, scores] { p.deallocate() }
    }

    /// Bytes of weights this slice computes with.
    public var weightBytes: Int {
        weights.reduce(0) { sum, w in
            sum + [w.wq, w.wk, w.wv, w.wo, w.w1, w.w2, w.w3].reduce(0) { $0 + $1.byteCount }
        }
    }

    /// Runs the slice's layers over `count` tokens of hidden state `hidden` (count, dim), in place.
    /// Token `i` belongs to sequence `sequenceIDs[i]` at `positions[i]`; a sequence's tokens
    /// must come in increasing position order, continuing what its cache holds.
    public func forward(hidden: UnsafeMutablePointer<Float>, count: Int,
                        sequenceIDs: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>) throws {
        precondition(sequenceIDs.count >= count && positions.count >= count)
        // Validate the whole batch before touching the cache.
        // batchNext[s] is the next position sequence s must have in this batch (-1: not seen yet).
        defer { for i in 0..<count where sequenceIDs[i] >= 0 && Int(sequenceIDs[i]) < cache.maxSequences { batchNext[Int(sequenceIDs[i])] = -1 } }
        for i in 0..<count {
            let s = Int(sequenceIDs[i]), p = Int(positions[i])
            if s >= 0, s < cache.maxSequences, batchNext[s] >= 0 {
                let next = batchNext[s]
                guard p == next else {
                    throw ModelError.sequence("sequence \(s): position \(p) does not follow position \(next - 1) in this batch")
                }
                guard p < cache.contextLength else {
                    throw ModelError.sequence("position \(p) of sequence \(s) is outside the context of \(cache.contextLength)")
                }
            } else {
                try cache.checkWrite(slot: s, position: p)
            }
            batchNext[s] = p + 1
        }
        var start = 0
        while start < count {
            let n = min(maxBatch, count - start)
            runChunk(hidden: hidden + start * config.dim, count: n,
                     sequenceIDs: UnsafeBufferPointer(rebasing: sequenceIDs[start..<start + n]),
                     positions: UnsafeBufferPointer(rebasing: positions[start..<start + n]))
            start += n
        }
    }

    /// Convenience for one sequence: tokens at positions `startPosition...`.
    public func forward(hidden: UnsafeMutablePointer<Float>, count: Int, sequence: Int32, startPosition: Int) throws {
        let ids = [Int32](repeating: sequence, count: count)
        let pos = (0..<count).map { Int32(startPosition + $0) }
        try ids.withUnsafeBufferPointer { i in
            try pos.withUnsafeBufferPointer { p in try forward(hidden: hidden, count: count, sequenceIDs: i, positions: p) }
        }
    }

    // MARK: - One chunk through all layers

    private func runChunk(hidden x: UnsafeMutablePointer<Float>, count n: Int,
                          sequenceIDs: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>) {
        let c = config
        let dim = c.dim, kvDim = c.kvDim, ffn = c.ffnDim
        slots.removeAll(keepingCapacity: true)
        self.positions.removeAll(keepingCapacity: true)
        for i in 0..<n {
            slots.append(Int(sequenceIDs[i]))
            self.positions.append(Int(positions[i]))
        }
        computeRopeTable(count: n)

        for (li, w) in weights.enumerated() {
            // Attention block.
            rmsNorm(x, count: n, dim: dim, weight: w.attentionNorm, epsilon: c.rmsEpsilon, out: xb)
            matmulShared(w.wq, w.wk, w.wv, input: xb, batch: n, output1: q, output2: k, output3: v, pool: pool, scratch: scratch)
            applyRope(q, heads: c.headCount, count: n)
            applyRope(k, heads: c.kvHeadCount, count: n)
            for i in 0..<n {
                cache.store(layer: li, slot: slots[i], position: self.positions[i], key: k + i * kvDim, value: v + i * kvDim)
            }
            attention(layer: li, count: n)
            matmul(w.wo, input: att, batch: n, output: xb, pool: pool, scratch: scratch)
            addInPlace(x, xb, n * dim)

            // Feed-forward block.
            rmsNorm(x, count: n, dim: dim, weight: w.ffnNorm, epsilon: c.rmsEpsilon, out: xb)
            matmulShared(w.w1, w.w3, input: xb, batch: n, output1: h1, output2: h3, pool: pool, scratch: scratch)
            swigluInPlace(count: n * ffn)
            matmul(w.w2, input: h1, batch: n, output: xb, pool: pool, scratch: scratch)
            addInPlace(x, xb, n * dim)
        }
        // A sequence now holds exactly the positions up to its last token here.
        for i in 0..<n { cache.setLength(slot: slots[i], self.positions[i] + 1) }
    }

    // MARK: - Pieces

    /// cos/sin of each (token, pair) as llama.cpp computes them: theta_i = pos * base^(-2i/ropeDim).
    private func computeRopeTable(count n: Int) {
        let half = config.ropeDim / 2
        let thetaScale = powf(config.ropeBase, -2 / Float(config.ropeDim))
        for t in 0..<n {
            var theta = Float(positions[t])
            let row = rope + t * config.ropeDim
            for i in 0..<half {
                row[2 * i] = cosf(theta)
                row[2 * i + 1] = sinf(theta)
                theta *= thetaScale
            }
        }
    }

    /// Rotates adjacent pairs (x[2i], x[2i+1]) of the first `ropeDim` dims of every head.
    private func applyRope(_ x: UnsafeMutablePointer<Float>, heads: Int, count n: Int) {
        let hd = config.headDim, half = config.ropeDim / 2, width = heads * hd
        for t in 0..<n {
            let table = rope + t * config.ropeDim
            for h in 0..<heads {
                let p = x + t * width + h * hd
                for i in 0..<half {
                    let c = table[2 * i], s = table[2 * i + 1]
                    let a = p[2 * i], b = p[2 * i + 1]
                    p[2 * i] = a * c - b * s
                    p[2 * i + 1] = a * s + b * c
                }
            }
        }
    }

    /// Causal grouped-query attention of each token over its sequence's cached positions 0...pos.
    private func attention(layer: Int, count n: Int) {
        let c = config
        let hd = c.headDim, kvDim = c.kvDim, group = c.headCount / c.kvHeadCount
        // Tasks are (token, key/value head); each thread takes a contiguous range and hands the
        // kernel each token's run of heads at once, so that it walks their cached rows together.
        let tasks = n * c.kvHeadCount
        let threads = min(pool.threadCount, tasks)
        let scale = 1 / Float(hd).squareRoot()
        let ctx = cache.contextLength
        pool.parallelFor(threads) { chunk in
            let s = self.scores + chunk * c.headCount * ctx
            // Contiguous ranges of tasks, cut so that every thread gets about the same number of
            // cached positions to visit: later tokens of a prompt have longer histories.
            let (lo, hi) = self.attentionRange(chunk: chunk, threads: threads, count: n)
            var task = lo
            while task < hi {
                let t = task / c.kvHeadCount, firstKV = task % c.kvHeadCount
                let kvHeads = min(hi - task, c.kvHeadCount - firstKV)
                let base = self.cache.offset(layer: layer, slot: self.slots[t], position: 0) + firstKV * hd
                let query = self.q + t * c.dim + firstKV * group * hd, output = self.att + t * c.dim + firstKV * group * hd
                let positions = Int(self.positions[t]) + 1
                switch self.cache.type {
                case .f32:
                    groupedAttention(queries: query, queryStride: hd, keyValueHeads: kvHeads, group: group,
                                     keys: self.cache.keys.assumingMemoryBound(to: Float.self) + base,
                                     values: self.cache.values.assumingMemoryBound(to: Float.self) + base, rowStride: kvDim,
                                     headDim: hd, positions: positions, scale: scale, scores: s, output: output, outputStride: hd)
                case .f16:
                    groupedAttention(queries: query, queryStride: hd, keyValueHeads: kvHeads, group: group,
                                     keys: self.cache.keys.assumingMemoryBound(to: UInt16.self) + base,
                                     values: self.cache.values.assumingMemoryBound(to: UInt16.self) + base, rowStride: kvDim,
                                     headDim: hd, positions: positions, scale: scale, scores: s, output: output, outputStride: hd)
                }
                task += kvHeads
            }
        }
    }

    /// Tasks [lo, hi) (token-major, `kvHeadCount` per token) of thread `chunk` out of `threads`,
    /// balanced by the positions each token attends to.
    private func attentionRange(chunk: Int, threads: Int, count n: Int) -> (Int, Int) {
        let heads = config.kvHeadCount
        if threads == 1 { return (0, n * heads) }
        var total = 0
        for t in 0..<n { total += positions[t] + 1 }
        let total_ = total * heads
        let begin = total_ * chunk / threads, end = total_ * (chunk + 1) / threads
        // First task whose cumulative work reaches `target`.
        func boundary(_ target: Int) -> Int {
            if target >= total_ { return n * heads }
            var done = 0
            for t in 0..<n {
                let w = positions[t] + 1
                if done + w * heads > target { return t * heads + (target - done + w - 1) / w }
                done += w * heads
            }
            return n * heads
        }
        return (boundary(begin), boundary(end))
    }

    /// h1 = silu(h1) * h3, spread over the pool.
    private func swigluInPlace(count total: Int) {
        let threads = pool.threadCount
        pool.parallelFor(threads) { chunk in
            let lo = total * chunk / threads, hi = total * (chunk + 1) / threads
            swiglu(gate: self.h1 + lo, up: self.h3 + lo, count: hi - lo)
        }
    }

    private func addInPlace(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { x[i] += y[i] }
    }

    /// Forgets a sequence's cached keys and values.
    public func release(sequence: Int32) { cache.release(slot: Int(sequence)) }
}
