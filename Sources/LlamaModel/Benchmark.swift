#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
// MARK: - Options and results

/// What ``LlamaBenchmark`` measures.
public struct BenchmarkOptions: Sendable, Equatable {
    /// Tokens of the prompt, evaluated as one batch from an empty cache.
    public var promptTokens: Int
    /// Decode steps after the prompt, one token per sequence per step.
    public var genTokens: Int
    /// Sequences decoded together in one batch per step.
    public var batch: Int
    /// Timed repetitions (after one untimed warm-up).
    public var repetitions: Int
    /// Seed of the pseudo-random token ids.
    public var seed: UInt64

    public init(promptTokens: Int = 512, genTokens: Int = 128, batch: Int = 1, repetitions: Int = 3, seed: UInt64 = 1234) {
        self.promptTokens = promptTokens
        self.genTokens = genTokens
        self.batch = batch
        self.repetitions = repetitions
        self.seed = seed
    }

    /// Throws a ``ModelError/invalidConfig(key:reason:)`` naming the first option out of range.
    public func validate() throws {
        guard promptTokens >= 1 else { throw ModelError.invalidConfig(key: "prompt-tokens", reason: "\(promptTokens) must be at least 1") }
        guard genTokens >= 1 else { throw ModelError.invalidConfig(key: "gen-tokens", reason: "\(genTokens) must be at least 1") }
        guard batch >= 1 else { throw ModelError.invalidConfig(key: "batch", reason: "\(batch) must be at least 1") }
        guard repetitions >= 1 else { throw ModelError.invalidConfig(key: "repetitions", reason: "\(repetitions) must be at least 1") }
    }
}

/// Mean and (population) standard deviation of repeated measurements.
public struct MeasuredRate: Sendable, Equatable, Codable {
    public var mean: Double
    public var stddev: Double
    public var samples: [Double]

    public init(samples: [Double]) {
        self.samples = samples
        let n = Double(max(samples.count, 1))
        let m = samples.reduce(0, +) / n
        mean = m
        stddev = (samples.reduce(0) { $0 + ($1 - m) * ($1 - m) } / n).squareRoot()
    }
}

/// Figures of one benchmark run, llama-bench style.
public struct BenchmarkResult: Sendable, Equatable, Codable {
    public var threads: Int
    public var promptTokens: Int
    public var genTokens: Int
    public var batch: Int
    public var repetitions: Int
    /// Prompt tokens per second (one batch of `promptTokens`, empty cache).
    public var prefillTokensPerSecond: MeasuredRate
    /// Tokens per second decoded by all `batch` sequences together.
    public var decodeTokensPerSecond: MeasuredRate
    /// Tokens per second of each sequence (aggregate / batch).
    public var decodeTokensPerSecondPerSequence: MeasuredRate
    /// Weight bytes one decode step reads: every layer matrix plus the output head
    /// (norms, the embedding row and the KV cache are left out).
    public var weightBytesPerStep: Int
    /// `weightBytesPerStep` times decode steps per second, in GB/s (10^9 bytes).
    public var impliedWeightGBPerSecond: Double
}

// MARK: - Runner

/// Measures prefill and decode speed of a model opened in one process.
///
/// Each repetition clears the cache, evaluates a prompt of pseudo-random token ids in one
/// batch (timed), then runs `genTokens` decode steps in which every sequence of the batch
/// gets one new token (timed). Sequences other than 0 get the same prompt, untimed, so that
/// every sequence decodes after `promptTokens` positions. One untimed warm-up run comes first.
/// Nothing is allocated inside the timed decode loop.
public enum LlamaBenchmark {
    /// The engine parameters a benchmark with `options` needs: sequences, context and batch.
    public static func engineRequirements(_ options: BenchmarkOptions) -> (maxSequences: Int, contextLength: Int, maxBatch: Int) {
        (options.batch, options.promptTokens + options.genTokens, max(options.promptTokens, options.batch))
    }

    /// Bytes of weights one decode step reads: the engine's layers plus its output head.
    public static func weightBytesPerStep(_ engine: LlamaEngine) throws -> Int {
        let head = try LlamaTensorLoader(file: engine.file, config: engine.config).outputHead()
        return engine.slice.weightBytes + head.byteCount
    }

    /// Runs the benchmark on `engine`, which must have been opened with at least
    /// ``engineRequirements(_:)``.
    public static func run(engine: LlamaEngine, options: BenchmarkOptions) throws -> BenchmarkResult {
        try options.validate()
        let need = engineRequirements(options)
        let slice = engine.slice
        guard slice.cache.maxSequences >= need.maxSequences else {
            throw ModelError.invalidConfig(key: "batch", reason: "\(options.batch) sequences but the engine holds \(slice.cache.maxSequences)")
        }
        guard engine.contextLength >= need.contextLength else {
            throw ModelError.promptTooLong(tokens: need.contextLength, context: engine.contextLength)
        }
        guard slice.maxBatch >= need.maxBatch, engine.head.maxBatch >= options.batch else {
            throw ModelError.invalidConfig(key: "max_batch", reason: "the engine's batch of \(slice.maxBatch) is smaller than \(need.maxBatch)")
        }

        let runner = Runner(engine: engine, options: options)
        _ = try runner.once(steps: 1)  // warm-up
        var prefill = [Double](), decode = [Double]()
        for _ in 0..<options.repetitions {
            let (p, d) = try runner.once(steps: options.genTokens)
            prefill.append(Double(options.promptTokens) / p)
            decode.append(Double(options.genTokens * options.batch) / d)
        }
        let bytes = try weightBytesPerStep(engine)
        let aggregate = MeasuredRate(samples: decode)
        return BenchmarkResult(
            threads: engine.pool.threadCount, promptTokens: options.promptTokens, genTokens: options.genTokens,
            batch: options.batch, repetitions: options.repetitions,
            prefillTokensPerSecond: MeasuredRate(samples: prefill),
            decodeTokensPerSecond: aggregate,
            decodeTokensPerSecondPerSequence: MeasuredRate(samples: decode.map { $0 / Double(options.batch) }),
            weightBytesPerStep: bytes,
            impliedWeightGBPerSecond: aggregate.mean / Double(options.batch) * Double(bytes) / 1e9)
    }

    /// Buffers for one benchmark, allocated once.
    private final class Runner {
        let engine: LlamaEngine
        let options: BenchmarkOptions
        var random: UInt64
        var prompt: [Int32]
        var tokens: [Int32]
        var sequenceIDs: [Int32]
        var positions: [Int32]
        var hidden: [Float]
        var logits: [Float]

        init(engine: LlamaEngine, options: BenchmarkOptions) {
            self.engine = engine
            self.options = options
            random = options.seed | 1
            let b = options.batch
            prompt = [Int32](repeating: 0, count: options.promptTokens)
            tokens = [Int32](repeating: 0, count: b)
            sequenceIDs = (0..<b).map(Int32.init)
            positions = [Int32](repeating: 0, count: b)
            hidden = [Float](repeating: 0, count: b * engine.config.dim)
            logits = [Float](repeating: 0, count: b * engine.config.vocabSize)
        }

        /// A pseudo-random token id other than 0 (xorshift64*).
        func nextToken() -> Int32 {
            random ^= random >> 12
            random ^= random << 25
            random ^= random >> 27
            let r = random &* 0x2545_F491_4F6C_DD1D
            return Int32(1 + (r >> 33) % UInt64(engine.config.vocabSize - 1))
        }

        /// One repetition: (prefill seconds, decode seconds of `steps` steps).
        func once(steps: Int) throws -> (Double, Double) {
            let b = options.batch, p = options.promptTokens
            for s in 0..<b { engine.reset(sequence: Int32(s)) }
            prompt[0] = engine.bosID
            for i in 1..<p { prompt[i] = nextToken() }

            let t0 = monotonicSeconds()
            try engine.evaluate(prompt, sequence: 0, startPosition: 0, logits: .last)
            let prefillSeconds = monotonicSeconds() - t0
            for s in 1..<b {
                try engine.evaluate(prompt, sequence: Int32(s), startPosition: 0, logits: .last)
            }

            for i in 0..<b { tokens[i] = nextToken() }
            let t1 = monotonicSeconds()
            for step in 0..<steps {
                for i in 0..<b { positions[i] = Int32(p + step) }
                try hidden.withUnsafeMutableBufferPointer { h in
                    try tokens.withUnsafeBufferPointer { try engine.head.embed($0, into: h.baseAddress!) }
                    try sequenceIDs.withUnsafeBufferPointer { ids in
                        try positions.withUnsafeBufferPointer { pos in
                            try engine.slice.forward(hidden: h.baseAddress!, count: b, sequenceIDs: ids, positions: pos)
                        }
                    }
                    logits.withUnsafeMutableBufferPointer { l in
                        engine.head.logits(hidden: h.baseAddress!, count: b, into: l.baseAddress!)
                    }
                }
                for i in 0..<b { tokens[i] = nextToken() }
            }
            return (prefillSeconds, monotonicSeconds() - t1)
        }
    }
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
