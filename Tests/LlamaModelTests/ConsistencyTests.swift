import TestSupport
import Foundation
import GGUF
import LlamaKernels
import LlamaModel
import LlamaSampling
import Testing

/// The engine agrees with itself across the ways the same computation can be scheduled.
@Suite("Forward pass consistency")
struct ConsistencyTests {
    static let prompt: [Int32] = [1, 15043, 29892, 590, 1024, 338, 263, 1243, 310, 278, 5922, 1788, 29889, 450, 4996]

    /// Writes a synthetic model of `type` and passes its path to `body`; the file lives until `body` returns.
    func withModel(_ type: GGMLType, kvHeads: Int = 2, _ body: (String) throws -> Void) throws {
        let dir = try TemporaryDirectory()
        let synth = SyntheticModel(dim: 256, layers: 4, heads: 8, kvHeads: kvHeads, ffn: 512, context: 128, type: type, seed: 3)
        let path = try writeSyntheticModel(synth, in: dir, name: "m.gguf")
        try withExtendedLifetime(dir) { try body(path) }
    }

    @Test("a prompt as one batch equals feeding it token by token", arguments: [GGMLType.f32, .q4_0, .q8_0, .q4_K])
    func batchEqualsStepwise(_ type: GGMLType) throws {
        try withModel(type) { path in
            let engine = try LlamaEngine(path: path, threads: 2)
            let batched = try engine.evaluate(Self.prompt, startPosition: 0, logits: .all)
            engine.reset()
            var stepwise: [Float] = []
            for (i, t) in Self.prompt.enumerated() {
                stepwise += try engine.evaluate([t], startPosition: i, logits: .last)
            }
            // Each output value is computed by the same kernels in the same order whatever the batch,
            // so the results agree to float rounding of the attention sums (none in practice).
            #expect(maxAbsDifference(batched, stepwise) <= 1e-4)
        }
    }

    @Test("layers 0..<k then k..<L equal 0..<L")
    func splitSlicesEqualWhole() throws {
        try withModel(.q8_0) { path in
            let file = try GGUFFile(path: path)
            let config = try LlamaConfig(gguf: file)
            let pool = ThreadPool(threadCount: 2)
            let head = try LlamaHead(file: file, config: config, pool: pool)
            let whole = try LayerSlice(file: file, config: config, layers: LayerRange(0, 4), contextLength: 64, pool: pool)
            let first = try LayerSlice(file: file, config: config, layers: LayerRange(0, 1), contextLength: 64, pool: pool)
            let second = try LayerSlice(file: file, config: config, layers: LayerRange(1, 4), contextLength: 64, pool: pool)
            let n = Self.prompt.count
            var a = [Float](repeating: 0, count: n * config.dim)
            try Self.prompt.withUnsafeBufferPointer { t in try a.withUnsafeMutableBufferPointer { try head.embed(t, into: $0.baseAddress!) } }
            var b = a
            try a.withUnsafeMutableBufferPointer { try whole.forward(hidden: $0.baseAddress!, count: n, sequence: 0, startPosition: 0) }
            try b.withUnsafeMutableBufferPointer {
                try first.forward(hidden: $0.baseAddress!, count: n, sequence: 0, startPosition: 0)
                try second.forward(hidden: $0.baseAddress!, count: n, sequence: 0, startPosition: 0)
            }
            #expect(a == b)
        }
    }

    @Test("several sequences in one batch equal each alone")
    func interleavedSequences() throws {
        try withModel(.q4_0) { path in
            let file = try GGUFFile(path: path)
            let config = try LlamaConfig(gguf: file)
            let pool = ThreadPool(threadCount: 2)
            let head = try LlamaHead(file: file, config: config, pool: pool)
            let slice = try LayerSlice(file: file, config: config, layers: LayerRange(0, 4), maxSequences: 3, contextLength: 64, pool: pool)
            let seqs: [[Int32]] = [Array(Self.prompt[0..<5]), Array(Self.prompt[5..<12]), Array(Self.prompt[2..<4])]
            // Alone.
            var alone: [[Float]] = []
            for s in seqs {
                var h = [Float](repeating: 0, count: s.count * config.dim)
                try s.withUnsafeBufferPointer { t in try h.withUnsafeMutableBufferPointer { try head.embed(t, into: $0.baseAddress!) } }
                try h.withUnsafeMutableBufferPointer { try slice.forward(hidden: $0.baseAddress!, count: s.count, sequence: 0, startPosition: 0) }
                alone.append(h)
                slice.release(sequence: 0)
            }
            // Together: the tokens of all three sequences interleaved in one batch.
            var tokens: [Int32] = [], ids: [Int32] = [], pos: [Int32] = [], origin: [(Int, Int)] = []
            for i in 0..<seqs.map(\.count).max()! {
                for (s, seq) in seqs.enumerated() where i < seq.count {
                    tokens.append(seq[i]); ids.append(Int32(s)); pos.append(Int32(i)); origin.append((s, i))
                }
            }
            var h = [Float](repeating: 0, count: tokens.count * config.dim)
            try tokens.withUnsafeBufferPointer { t in try h.withUnsafeMutableBufferPointer { try head.embed(t, into: $0.baseAddress!) } }
            try h.withUnsafeMutableBufferPointer { hp in
                try ids.withUnsafeBufferPointer { i in
                    try pos.withUnsafeBufferPointer { p in try slice.forward(hidden: hp.baseAddress!, count: tokens.count, sequenceIDs: i, positions: p) }
                }
            }
            for (row, (s, i)) in origin.enumerated() {
                let together = Array(h[(row * config.dim)..<((row + 1) * config.dim)])
                let single = Array(alone[s][(i * config.dim)..<((i + 1) * config.dim)])
                #expect(maxAbsDifference(together, single) <= 1e-4, "sequence \(s) position \(i)")
            }
        }
    }

    /// The f16 cache rounds each stored key and value once (relative error up to 2^-11): on
    /// the trained demo model its logits differ from the f32 cache's (so the halves are really
    /// what attention reads) by about 0.4 % of the logits' spread, far below what a misread
    /// cache gives, and it holds the same positions in half the memory.
    @Test("an f16 KV cache stays close to an f32 one in half the memory")
    func halfCache() throws {
        do {
            let path = Repo.demoModel
            let half = try LlamaEngine(path: path, threads: 2, contextLength: 64, kvCache: .f16)
            let full = try LlamaEngine(path: path, threads: 2, contextLength: 64, kvCache: .f32)
            let a = try half.evaluate(Self.prompt, startPosition: 0, logits: .all)
            let b = try full.evaluate(Self.prompt, startPosition: 0, logits: .all)
            let spread = b.max()! - b.min()!
            let diff = maxAbsDifference(a, b)
            #expect(diff > 0, "the f16 cache gave the f32 cache's logits bit for bit")
            #expect(diff <= 1e-2 * spread, "max |Δ| \(diff) against a logit spread of \(spread)")
            #expect(half.slice.cache.type == .f16 && full.slice.cache.type == .f32)
            #expect(half.slice.cache.usedBytes * 2 == full.slice.cache.usedBytes)
            #expect(half.slice.cache.usedBytes == Self.prompt.count * half.config.layerCount * half.config.kvDim * 2 * 2)
        }
    }

    @Test("bad batches are rejected with an error, the cache untouched")
    func badBatches() throws {
        try withModel(.f32) { path in
            let engine = try LlamaEngine(path: path, threads: 1, contextLength: 16)
            #expect(throws: ModelError.self) { try engine.evaluate([1, 2, 3], startPosition: 5) }          // skips ahead
            #expect(throws: ModelError.self) { try engine.evaluate(Array(repeating: 1, count: 17), startPosition: 0) }  // past the context
            #expect(throws: ModelError.self) { try engine.evaluate([1, 99999], startPosition: 0) }         // token outside vocabulary
            #expect(engine.slice.cache.lengths[0] == 0)
            let ok = try engine.evaluate([1, 2, 3], startPosition: 0)
            #expect(ok.count == engine.config.vocabSize)
        }
    }
}
