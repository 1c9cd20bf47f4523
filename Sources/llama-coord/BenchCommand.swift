import ArgumentParser
import ClusterWire
import Foundation
import GGUF
import LlamaClient
import LlamaModel
import LlamaSampling

// MARK: - bench

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed of a model file, or of a running cluster.",
        discussion: """
            With --model alone: the model runs in this process. Load time is excluded; one untimed \
            warm-up run comes first; each repetition evaluates a prompt of pseudo-random tokens as one \
            batch from an empty cache, then decodes --gen-tokens steps of one token per sequence \
            (--batch sequences together). Figures are mean ± standard deviation over the repetitions. \
            The weight bytes per step are every layer matrix plus the output head; the implied GB/s \
            is that times steps per second.

            With --endpoint: --concurrency streaming completions (temperature 0, a prompt of about \
            --prompt-tokens tokens) run at once against a coordinator, --repetitions times. The \
            aggregate decode tokens/s sums every stream's tokens after its first over the time they \
            took. Add --model (the same file the cluster serves; only its header is read) to get the bytes \
            one token's activations take on the wire per hop.
            """)

    @Option(help: "GGUF model file (cluster mode: read for the model width only).") var model: String?
    @Option(help: "A coordinator's HTTP endpoint, e.g. http://127.0.0.1:8080: benchmark the cluster.") var endpoint: String?
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Prompt tokens.") var promptTokens = 512
    @Option(help: "Generated tokens per sequence.") var genTokens = 128
    @Option(help: "Sequences decoded together in one batch (model mode).") var batch = 1
    @Option(help: "Concurrent streaming completions (cluster mode).") var concurrency = 1
    @Option(help: "Prompt text from this file instead of --prompt-tokens filler words (cluster mode).") var promptFile: String?
    @Option(help: "Timed repetitions.") var repetitions = 3
    @Option(name: .customLong("kv-cache"), help: "How the KV cache stores keys and values (model mode): f16 (as llama.cpp) or f32.")
    var kvCache: KVCacheType = .f16
    @Option(help: "API key for the endpoint, sent as Authorization: Bearer KEY (cluster mode).") var apiKey: String?
    @Option(name: .customLong("ca-cert"), help: "A CA certificate (PEM) to trust for an https:// endpoint, e.g. a self-signed one (cluster mode).")
    var caCert: String?
    @Flag(help: "Print JSON instead of a table.") var json = false
    @Option(help: "Keep Q4_0 and Q8_0 weights repacked for the AVX2 product in this directory (made once, then mapped; model mode).")
    var repackDir: String?

    func validate() throws {
        if endpoint == nil, model == nil { throw ValidationError("give --model FILE, or --endpoint URL for a cluster") }
        guard promptTokens >= 1, genTokens >= 1 else { throw ValidationError("--prompt-tokens and --gen-tokens must be at least 1") }
        guard batch >= 1, concurrency >= 1, repetitions >= 1 else {
            throw ValidationError("--batch, --concurrency and --repetitions must be at least 1")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() async throws {
        if let endpoint {
            try await runCluster(endpoint: endpoint)
        } else if let model {
            if let repackDir { try RepackedWeights.enable(directory: repackDir) }
            try runModel(path: model)
        }
    }

    // MARK: - One process

    private func runModel(path: String) throws {
        let options = BenchmarkOptions(promptTokens: promptTokens, genTokens: genTokens, batch: batch, repetitions: repetitions)
        let need = LlamaBenchmark.engineRequirements(options)
        let loadStart = now()
        let engine = try LlamaEngine(path: path, threads: threads, maxSequences: need.maxSequences,
                                     contextLength: need.contextLength, maxBatch: need.maxBatch, kvCache: kvCache)
        printErr(String(format: "loaded %@ in %.2f s (not counted)", path, now() - loadStart))
        let result = try LlamaBenchmark.run(engine: engine, options: options)
        if json {
            print(try jsonText(ModelBenchReport(model: path, config: engine.config, result: result)))
            return
        }
        let c = engine.config
        let types = Set(engine.file.tensors.filter { $0.name.hasPrefix("blk.") && $0.shape.count == 2 }.map(\.type.description))
        print("model \(path): \(c.layerCount) layers, width \(c.dim), FFN \(c.ffnDim), \(c.headCount) heads (\(c.kvHeadCount) KV), \(types.sorted().joined(separator: "/")), threads \(result.threads)")
        print(formatTable([
            ["test", "tokens/s", "± stddev"],
            ["prefill pp\(promptTokens)", fixed(result.prefillTokensPerSecond.mean), fixed(result.prefillTokensPerSecond.stddev)],
            ["decode tg\(genTokens) batch \(batch)", fixed(result.decodeTokensPerSecond.mean), fixed(result.decodeTokensPerSecond.stddev)],
            ["  per sequence", fixed(result.decodeTokensPerSecondPerSequence.mean), fixed(result.decodeTokensPerSecondPerSequence.stddev)],
        ]))
        print(String(format: "weights read per decode step: %@ (layers + output head); implied %.2f GB/s; %d repetitions",
                     formatBytes(result.weightBytesPerStep), result.impliedWeightGBPerSecond, repetitions))
    }

    // MARK: - Cluster

    private func runCluster(endpoint: String) async throws {
        let width = try model.map { try LlamaConfig(gguf: GGUFFile(path: $0)).dim }
        let prompt: String
        if let promptFile {
            guard let data = FileManager.default.contents(atPath: promptFile), let text = String(data: data, encoding: .utf8),
                  !text.isEmpty else { throw ValidationError("--prompt-file \(promptFile): no readable UTF-8 text there") }
            prompt = text
        } else {
            prompt = benchmarkPrompt(approximateTokens: promptTokens)
        }
        var greedy = SamplingParameters()
        greedy.temperature = 0
        let params = try greedy.validated()

        let client = LlamaEndpoint(endpoint, apiKey: apiKey, caCertificateFile: caCert)

        // Warm-up: one short completion, untimed.
        _ = try await client.streamCompletion(prompt: prompt, parameters: params, maxTokens: 2) { _ in }

        let before = try await Self.settledStatus(client).metrics
        var aggregate = [Double](), aggregateDecode = [Double](), streams = [StreamTiming]()
        for _ in 0..<repetitions {
            let start = now()
            let round = try await Self.runStreams(client, count: concurrency, prompt: prompt, parameters: params,
                                                  maxTokens: genTokens)
            let wall = now() - start
            aggregate.append(Double(round.reduce(0) { $0 + $1.generated }) / wall)
            aggregateDecode.append(Self.concurrentDecodeRate(round))
            streams += round
        }
        let status = try await Self.settledStatus(client)
        let decoding = streams.filter { $0.generated > 1 }
        let texts = Set(streams.map(\.text))
        let report = ClusterBenchReport(
            endpoint: endpoint, model: status.model, concurrency: concurrency, repetitions: repetitions,
            promptTokens: streams.map(\.promptTokens).max() ?? 0,
            generatedTokensPerStream: Double(streams.reduce(0) { $0 + $1.generated }) / Double(max(streams.count, 1)),
            aggregateTokensPerSecond: MeasuredRate(samples: aggregate),
            aggregateDecodeTokensPerSecond: MeasuredRate(samples: aggregateDecode),
            secondsPerTokenPerStream: MeasuredRate(samples: decoding.map { $0.decodeSeconds / Double($0.generated - 1) }),
            timeToFirstTokenSeconds: MeasuredRate(samples: streams.map(\.firstTokenSeconds)),
            texts: texts.count,
            textDigest: textDigest(texts.sorted()),
            draftedTokens: (status.metrics.draftTokens ?? 0) - (before.draftTokens ?? 0),
            acceptedDraftTokens: (status.metrics.draftTokensAccepted ?? 0) - (before.draftTokensAccepted ?? 0),
            workers: status.workers.map {
                .init(name: $0.name, layers: $0.layers, tokensPerSecond: $0.tokensPerSecond,
                      secondsPerHop: $0.tokensPerSecond > 0 ? 1 / $0.tokensPerSecond : nil)
            },
            width: width,
            wireBytesPerTokenPerHop: width.map { w in
                .init(f16: wireBytes(width: w, tokens: 1, dtype: .f16), f32: wireBytes(width: w, tokens: 1, dtype: .f32),
                      f16Batched: wireBytes(width: w, tokens: concurrency, dtype: .f16) / Double(concurrency),
                      f32Batched: wireBytes(width: w, tokens: concurrency, dtype: .f32) / Double(concurrency))
            })
        if json {
            print(try jsonText(report))
            return
        }
        print("cluster \(endpoint) serving \(report.model): \(concurrency) concurrent streams, prompt \(report.promptTokens) tokens, "
              + String(format: "%.1f generated per stream, %d repetitions", report.generatedTokensPerStream, repetitions))
        print(formatTable([
            ["figure", "mean", "± stddev"],
            ["aggregate tokens/s (prompt to last token)", fixed(report.aggregateTokensPerSecond.mean), fixed(report.aggregateTokensPerSecond.stddev)],
            ["aggregate decode tokens/s", fixed(report.aggregateDecodeTokensPerSecond.mean), fixed(report.aggregateDecodeTokensPerSecond.stddev)],
            ["ms per token per stream", fixed(report.secondsPerTokenPerStream.mean * 1e3), fixed(report.secondsPerTokenPerStream.stddev * 1e3)],
            ["ms to first token", fixed(report.timeToFirstTokenSeconds.mean * 1e3), fixed(report.timeToFirstTokenSeconds.stddev * 1e3)],
        ]))
        print(formatTable([["worker", "layers", "tokens/s", "ms per hop"]] + report.workers.map {
            [$0.name, $0.layers ?? "-", fixed($0.tokensPerSecond), $0.secondsPerHop.map { fixed($0 * 1e3) } ?? "-"]
        }))
        if report.draftedTokens > 0 {
            print(String(format: "speculation: %d drafted, %d accepted (%.1f %%)", report.draftedTokens, report.acceptedDraftTokens,
                         100 * Double(report.acceptedDraftTokens) / Double(report.draftedTokens)))
        }
        print("texts: \(report.texts) different over \(streams.count) streams (digest \(report.textDigest))")
        if let w = report.wireBytesPerTokenPerHop, let width {
            print(String(format: "wire bytes per token per hop (width %d): f16 %.0f, f32 %.0f; in a frame of %d tokens: f16 %.0f, f32 %.0f",
                         width, w.f16, w.f32, concurrency, w.f16Batched, w.f32Batched))
        } else {
            print("(add --model FILE for the activation bytes on the wire)")
        }
    }

    /// Timing of one streamed completion.
    private struct StreamTiming: Sendable {
        var promptTokens: Int
        var generated: Int
        var firstTokenSeconds: Double
        var decodeSeconds: Double
        /// Arrival of each streamed piece, in seconds from the start of the round.
        var arrivals: [Double]
        /// The completion's text.
        var text: String
    }

    /// Decode tokens/s of all streams together while every one of them is decoding: tokens that
    /// arrive between the last stream's first token and the first stream's last token, over that
    /// window (text pieces scaled to tokens by each stream's tokens per piece). Prompts still being evaluated (which share frames with decoding streams) and
    /// streams that already finished are left out. When the window is too short to measure (under
    /// 0.5 s), the streams' own decode rates are summed instead.
    /// `/status` once the coordinator has published what it has done: it publishes its counters
    /// at the end of the turn that finished a request, which can come just after the client saw
    /// the last token, so one reading taken then misses that request's last drafts. Reads until
    /// two readings 50 ms apart agree on the counters (at most a second).
    private static func settledStatus(_ client: LlamaEndpoint) async throws -> ClusterStatus {
        func counters(_ m: MetricsReport) -> [Int?] {
            [m.requestsTotal, m.requestsActive, m.generatedTokensTotal, m.draftTokens, m.draftTokensAccepted]
        }
        var last = try await client.status()
        for _ in 0..<20 {
            try await Task.sleep(nanoseconds: 50_000_000)
            let next = try await client.status()
            if counters(next.metrics) == counters(last.metrics) { return next }
            last = next
        }
        return last
    }

    private static func concurrentDecodeRate(_ round: [StreamTiming]) -> Double {
        let decoding = round.filter { $0.arrivals.count > 1 }
        guard !decoding.isEmpty else { return 0 }
        let begin = decoding.map { $0.arrivals[0] }.max()!
        let end = decoding.map { $0.arrivals.last! }.min()!
        if end - begin >= 0.5 {
            // A piece of text can hold several tokens (an incomplete UTF-8 sequence is held back), so
            // each stream's pieces count as its tokens per piece.
            let tokens = decoding.reduce(0.0) { total, s in
                let pieces = s.arrivals.filter { $0 > begin && $0 <= end }.count
                return total + Double(pieces) * Double(max(s.generated - 1, 1)) / Double(s.arrivals.count - 1)
            }
            return tokens / (end - begin)
        }
        return decoding.filter { $0.decodeSeconds > 0 }.reduce(0) { $0 + Double($1.generated - 1) / $1.decodeSeconds }
    }

    /// Runs `count` streaming completions at once, as child tasks of one task group on the async
    /// client. The timings come in the order the streams end; the first failure cancels the
    /// other streams (closing their connections) and is thrown.
    private static func runStreams(_ client: LlamaEndpoint, count: Int, prompt: String, parameters: SamplingParameters,
                                   maxTokens: Int) async throws -> [StreamTiming] {
        let roundStart = now()
        return try await withThrowingTaskGroup(of: StreamTiming.self) { group in
            for _ in 0..<count {
                group.addTask {
                    var arrivals: [Double] = []
                    arrivals.reserveCapacity(maxTokens)
                    var text = ""
                    let (_, usage) = try await client.streamCompletion(prompt: prompt, parameters: parameters,
                                                                       maxTokens: maxTokens) { piece in
                        arrivals.append(now() - roundStart)
                        text += piece
                    }
                    let end = now() - roundStart
                    let firstAt = arrivals.first ?? end
                    return StreamTiming(promptTokens: usage.promptTokens, generated: usage.completionTokens,
                                        firstTokenSeconds: firstAt, decodeSeconds: (arrivals.last ?? end) - firstAt,
                                        arrivals: arrivals, text: text)
                }
            }
            var timings: [StreamTiming] = []
            timings.reserveCapacity(count)
            for try await timing in group { timings.append(timing) }
            return timings
        }
    }

    /// Bytes of an encoded activation message carrying `tokens` tokens of `width`.
    private func wireBytes(width: Int, tokens: Int, dtype: ActivationDType) -> Double {
        var rng = Xoshiro256StarStar(seed: 1)
        let values = (0..<tokens * width).map { _ in Float(rng.nextUnitDouble() * 4 - 2) }
        let frame = ActivationFrame(stepID: 1, width: width, dtype: dtype, sequenceIDs: (0..<tokens).map(Int32.init),
                                    positions: [Int32](repeating: Int32(promptTokens), count: tokens),
                                    needLogits: [Bool](repeating: true, count: tokens), values: values)
        return Double(WireMessage.activation(frame).encode().count)
    }
}

// MARK: - Reports

private struct ModelBenchReport: Encodable {
    var model: String
    var config: LlamaConfig
    var result: BenchmarkResult
}

private struct ClusterBenchReport: Encodable {
    struct Worker: Encodable {
        var name: String
        var layers: String?
        var tokensPerSecond: Double
        var secondsPerHop: Double?
    }
    struct WireBytes: Encodable {
        var f16: Double
        var f32: Double
        var f16Batched: Double
        var f32Batched: Double
    }
    var endpoint: String
    var model: String
    var concurrency: Int
    var repetitions: Int
    var promptTokens: Int
    var generatedTokensPerStream: Double
    /// Generated tokens of all streams over the wall time from the requests to the last token.
    var aggregateTokensPerSecond: MeasuredRate
    /// Tokens/s of all streams while every one is decoding (see `concurrentDecodeRate`).
    var aggregateDecodeTokensPerSecond: MeasuredRate
    var secondsPerTokenPerStream: MeasuredRate
    var timeToFirstTokenSeconds: MeasuredRate
    /// Speculative decoding during the timed rounds: tokens drafted and accepted.
    /// How many different texts the streams completed (greedy, one prompt: 1), and a digest
    /// of them, to compare runs with and without speculation.
    var texts: Int
    var textDigest: String
    var draftedTokens: Int
    var acceptedDraftTokens: Int
    var workers: [Worker]
    var width: Int?
    var wireBytesPerTokenPerHop: WireBytes?
}

// MARK: - Helpers

/// Text of roughly `approximateTokens` tokens with the Llama vocabulary: common words, about
/// one token each. The endpoint reports the exact count.
func benchmarkPrompt(approximateTokens n: Int) -> String {
    let words = ["the", "cat", "sat", "on", "a", "mat", "and", "we", "went", "to", "see", "it", "in", "my", "old", "house"]
    return (0..<max(n - 1, 1)).map { words[$0 % words.count] }.joined(separator: " ")
}

private func jsonText<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

private func fixed(_ v: Double) -> String { String(format: "%.2f", v) }

/// FNV-1a (64 bits) of the texts' UTF-8 bytes, each followed by a zero byte, in hex: a digest
/// to tell equal outputs from different ones, not a cryptographic one.
private func textDigest(_ texts: [String]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for t in texts {
        for b in t.utf8 + [0] { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
    }
    return String(format: "%016llx", h)
}

/// Left-aligned first column, right-aligned others.
func formatTable(_ rows: [[String]]) -> String {
    let widths = (0..<(rows.first?.count ?? 0)).map { c in rows.map { $0[c].count }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { c, cell in
            let pad = String(repeating: " ", count: widths[c] - cell.count)
            return c == 0 ? cell + pad : pad + cell
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}
