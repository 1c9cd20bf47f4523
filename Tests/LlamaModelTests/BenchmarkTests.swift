import TestSupport
import LlamaModel
import Testing

@Suite("Benchmark")
struct BenchmarkTests {
    /// A tiny Q8_0 model with grouped-query attention.
    static func tinyModel(in dir: TemporaryDirectory) throws -> String {
        let synth = SyntheticModel(dim: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 256, context: 64, type: .q8_0, seed: 7)
        return try writeSyntheticModel(synth, in: dir, name: "bench.gguf")
    }

    @Test("single and batched decode give positive, finite figures", arguments: [1, 3])
    func figuresArePositiveAndFinite(batch: Int) throws {
        let dir = try TemporaryDirectory()
        let options = BenchmarkOptions(promptTokens: 9, genTokens: 4, batch: batch, repetitions: 2)
        let need = LlamaBenchmark.engineRequirements(options)
        let engine = try LlamaEngine(path: try Self.tinyModel(in: dir), threads: 2, maxSequences: need.maxSequences,
                                     contextLength: need.contextLength, maxBatch: need.maxBatch)
        let result = try LlamaBenchmark.run(engine: engine, options: options)

        for rate in [result.prefillTokensPerSecond, result.decodeTokensPerSecond, result.decodeTokensPerSecondPerSequence] {
            #expect(rate.samples.count == 2)
            #expect(rate.samples.allSatisfy { $0.isFinite && $0 > 0 })
            #expect(rate.mean.isFinite && rate.mean > 0)
            #expect(rate.stddev.isFinite && rate.stddev >= 0)
        }
        let perSequence = result.decodeTokensPerSecondPerSequence.mean * Double(batch)
        #expect(abs(perSequence - result.decodeTokensPerSecond.mean) <= 1e-9 * perSequence)
        #expect(result.impliedWeightGBPerSecond.isFinite && result.impliedWeightGBPerSecond > 0)

        // The weight bytes are every layer matrix plus the output head, counted from the file.
        let expected = engine.file.tensors
            .filter { ($0.name.hasPrefix("blk.") && $0.shape.count == 2) || $0.name == LlamaTensorName.output }
            .reduce(0) { $0 + $1.byteCount }
        #expect(result.weightBytesPerStep == expected)
        #expect(result.batch == batch && result.threads == 2)
    }

    @Test("bad options and a too-small engine are refused with errors")
    func refusesBadOptions() throws {
        let dir = try TemporaryDirectory()
        let engine = try LlamaEngine(path: try Self.tinyModel(in: dir), threads: 1, maxSequences: 1, contextLength: 16, maxBatch: 8)
        #expect(throws: ModelError.self) { try LlamaBenchmark.run(engine: engine, options: BenchmarkOptions(promptTokens: 0, genTokens: 2)) }
        #expect(throws: ModelError.self) { try LlamaBenchmark.run(engine: engine, options: BenchmarkOptions(promptTokens: 4, genTokens: 2, batch: 2)) }
        #expect(throws: ModelError.self) { try LlamaBenchmark.run(engine: engine, options: BenchmarkOptions(promptTokens: 12, genTokens: 8)) }
        #expect(throws: ModelError.self) { try LlamaBenchmark.run(engine: engine, options: BenchmarkOptions(promptTokens: 9, genTokens: 2)) }
    }
}
