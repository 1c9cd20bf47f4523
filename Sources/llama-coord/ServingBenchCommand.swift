import ArgumentParser
import Foundation
import LlamaGrammar
import LlamaInference
import LlamaModel
import LlamaSampling

// MARK: - bench-serving

/// Figures of the serving features in one process (the scheduler, prompt cache and grammar
/// masks of `llama-coord serve`, without HTTP): time to first token cold and with a cached
/// prefix, and decode speed with and without a JSON schema.
struct BenchServing: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-serving",
        abstract: "Measure time to first token with and without a cached prefix, and decode speed under a JSON schema.",
        discussion: """
            Runs the one-process server's scheduler (`llama-coord serve` without HTTP). Time to first \
            token: each repetition takes a fresh prompt of --prompt-tokens pseudo-random token ids \
            whose first --cached-tokens are shared by two requests: a cold one (cache_prompt false, \
            every token computed) and then a cached one (cache_prompt true, a different tail after the \
            shared prefix, which the cold request left in a slot); each request generates one token. \
            Decode: --gen-tokens tokens (temperature 0.8, end-of-text banned) from a short prompt, with \
            no grammar and under a JSON schema that forces a long array of objects, in alternating \
            repetitions; the mask cost is also timed alone, by replaying the constrained output's tokens \
            through a fresh matcher (mask and accept per token). Medians over the repetitions.
            """)

    @Option(help: "GGUF model file.") var model: String
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Prompt tokens of the time-to-first-token requests.") var promptTokens = 450
    @Option(help: "Of those, tokens shared with the request before (the cached prefix).") var cachedTokens = 400
    @Option(help: "Tokens generated per decode run.") var genTokens = 128
    @Option(help: "Timed repetitions of each measurement.") var repetitions = 5
    @Flag(help: "Print JSON instead of a table.") var json = false

    func validate() throws {
        guard cachedTokens >= 1, cachedTokens < promptTokens else { throw ValidationError("--cached-tokens must be in 1..<--prompt-tokens") }
        guard genTokens >= 2, repetitions >= 1 else { throw ValidationError("--gen-tokens must be >= 2 and --repetitions >= 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    static let schema = """
        {"type": "object", "required": ["people"], "properties": {"people": {"type": "array", "minItems": 200,
         "items": {"type": "object", "required": ["name", "age", "likes", "pet"], "additionalProperties": false,
                   "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer"},
                                  "likes": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
                                  "pet": {"enum": ["cat", "dog", null]}}}}}}
        """

    func run() async throws {
        let context = max(promptTokens + 8, genTokens + 64)
        let backend = try LocalBackend(modelPath: model, options: .init(threads: threads, slots: 2, contextLength: context))
        backend.start()
        defer { backend.shutdown() }
        let vocab = backend.info.vocabularySize
        var rng = Xoshiro256StarStar(seed: 2024)
        func randomTokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(3 + Int(rng.nextUnitDouble() * Double(vocab - 3))) } }

        // Warm-up, untimed.
        _ = try await Self.timed(backend, CompletionJob(promptTokens: [backend.info.bosID] + randomTokens(64), parameters: .init(temperature: 0),
                                                        maxTokens: 4, cachePrompt: false))
        var cold: [Double] = [], cached: [Double] = [], reused: [Int] = []
        for _ in 0..<repetitions {
            let prefix = [backend.info.bosID] + randomTokens(cachedTokens - 1)
            let tailA = randomTokens(promptTokens - cachedTokens), tailB = randomTokens(promptTokens - cachedTokens)
            cold.append(try await Self.timed(backend, CompletionJob(promptTokens: prefix + tailA, parameters: .init(temperature: 0),
                                                                    maxTokens: 1, cachePrompt: false)).firstToken)
            let before = try await Self.settledCounters(backend).promptTokensCached
            cached.append(try await Self.timed(backend, CompletionJob(promptTokens: prefix + tailB, parameters: .init(temperature: 0),
                                                                      maxTokens: 1, cachePrompt: true)).firstToken)
            reused.append(try await Self.settledCounters(backend).promptTokensCached - before)
        }

        let grammar = try Grammar(jsonSchema: JSONSchemaValue(json: Self.schema))
        let prompt = backend.tokenize("A list of the people in the story, as JSON:", addBOS: true)
        var plainRates: [Double] = [], schemaRates: [Double] = [], maskMicros: [Double] = []
        var schemaTokens: [Int32] = []
        for r in 0..<repetitions {
            var p = SamplingParameters()
            p.seed = UInt64(r)
            p.logitBias = [backend.info.eosID: -100]
            for constrained in (r % 2 == 0 ? [false, true] : [true, false]) {
                let job = CompletionJob(promptTokens: prompt, parameters: p, maxTokens: genTokens, grammar: constrained ? grammar : nil,
                                        cachePrompt: false)
                let run = try await Self.timed(backend, job)
                if constrained { schemaRates.append(run.decodeRate); schemaTokens = run.tokens } else { plainRates.append(run.decodeRate) }
            }
            maskMicros.append(Self.maskCost(grammar: grammar, tokens: schemaTokens, backend: backend) * 1e6)
        }

        let report = ServingBenchReport(
            model: model, threads: threads, promptTokens: promptTokens, cachedPrefixTokens: cachedTokens, repetitions: repetitions,
            coldFirstTokenMs: median(cold) * 1e3, cachedFirstTokenMs: median(cached) * 1e3,
            coldFirstTokenMsAll: cold.map { $0 * 1e3 }, cachedFirstTokenMsAll: cached.map { $0 * 1e3 },
            promptTokensFromCache: reused,
            decodeTokens: genTokens, plainDecodeTokensPerSecond: median(plainRates), schemaDecodeTokensPerSecond: median(schemaRates),
            plainDecodeAll: plainRates, schemaDecodeAll: schemaRates,
            maskMicrosecondsPerToken: median(maskMicros), schemaOutputTokens: schemaTokens.count)
        if json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        let c = report
        print("model \(model), one process, threads \(threads.map(String.init) ?? "all"), \(repetitions) repetitions (medians; each run in brackets)")
        print(String(format: "time to first token, %d-token prompt: cold %.1f ms, %d-token prefix cached %.1f ms (%.2fx faster)",
                     promptTokens, c.coldFirstTokenMs, cachedTokens, c.cachedFirstTokenMs, c.coldFirstTokenMs / c.cachedFirstTokenMs))
        print("  cold   " + c.coldFirstTokenMsAll.map { String(format: "%.1f", $0) }.joined(separator: " "))
        print("  cached " + c.cachedFirstTokenMsAll.map { String(format: "%.1f", $0) }.joined(separator: " ")
              + "  (prompt tokens from the cache: \(reused.map(String.init).joined(separator: " ")))")
        let perTokenCost = 1 / c.schemaDecodeTokensPerSecond - 1 / c.plainDecodeTokensPerSecond
        print(String(format: "decode, %d tokens: %.2f tok/s plain, %.2f tok/s under the JSON schema (%+.2f ms per token)",
                     genTokens, c.plainDecodeTokensPerSecond, c.schemaDecodeTokensPerSecond, perTokenCost * 1e3))
        print("  plain  " + plainRates.map { String(format: "%.2f", $0) }.joined(separator: " "))
        print("  schema " + schemaRates.map { String(format: "%.2f", $0) }.joined(separator: " "))
        print(String(format: "grammar mask and accept alone, fresh matcher over the %d constrained tokens: %.1f us per token",
                     schemaTokens.count, c.maskMicrosecondsPerToken))
    }

    struct Run {
        var firstToken: Double
        var decodeRate: Double
        var tokens: [Int32]
    }

    /// Runs a job; seconds to its first token, tokens/s after the first, and its tokens.
    static func timed(_ backend: LocalBackend, _ job: CompletionJob) async throws -> Run {
        let start = now()
        var first: Double?, last = start
        var tokens: [Int32] = []
        for try await event in try backend.submit(job) {
            let t = now()
            switch event {
            case let .text(_, _, pieces) where !pieces.isEmpty:
                if first == nil { first = t }
                last = t
                tokens += pieces.map(\.token)
            case .finished:
                if first == nil { first = t }
            default:
                break
            }
        }
        let firstAt = first ?? now()
        let rate = tokens.count > 1 && last > firstAt ? Double(tokens.count - 1) / (last - firstAt) : 0
        return Run(firstToken: firstAt - start, decodeRate: rate, tokens: tokens)
    }

    /// The counters once the serving thread has published the turn that ended the last request
    /// (the snapshot is published after each turn, a little after the request's last event).
    static func settledCounters(_ backend: LocalBackend) async throws -> BackendCounters {
        try await Task.sleep(nanoseconds: 300_000_000)
        return backend.counters()
    }

    /// Seconds per token to mask a logits row and accept the token, through a matcher with an
    /// empty memo (as a new request's), for `tokens` in order.
    static func maskCost(grammar: Grammar, tokens: [Int32], backend: LocalBackend) -> Double {
        guard !tokens.isEmpty else { return 0 }
        let t = backend.tokenizer
        let vocabulary = GrammarVocabulary(pieces: (0..<Int32(t.vocabularySize)).map { t.piece($0) }, endOfText: t.eosID,
                                           isControl: { t.isControl($0) })
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: vocabulary)
        var row = [Float](repeating: 0, count: t.vocabularySize)
        let start = now()
        for token in tokens {
            row.withUnsafeMutableBufferPointer { matcher.mask(logits: $0) }
            guard (try? matcher.accept(token)) != nil else { break }
        }
        return (now() - start) / Double(tokens.count)
    }
}

private struct ServingBenchReport: Encodable {
    var model: String
    var threads: Int?
    var promptTokens: Int
    var cachedPrefixTokens: Int
    var repetitions: Int
    var coldFirstTokenMs: Double
    var cachedFirstTokenMs: Double
    var coldFirstTokenMsAll: [Double]
    var cachedFirstTokenMsAll: [Double]
    var promptTokensFromCache: [Int]
    var decodeTokens: Int
    var plainDecodeTokensPerSecond: Double
    var schemaDecodeTokensPerSecond: Double
    var plainDecodeAll: [Double]
    var schemaDecodeAll: [Double]
    var maskMicrosecondsPerToken: Double
    var schemaOutputTokens: Int
}

private func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
