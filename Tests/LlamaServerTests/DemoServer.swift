import Foundation
import Hummingbird
import HummingbirdTesting
import LlamaClient
import LlamaInference
import LlamaModel
import LlamaServer
import Prometheus
import TestSupport
import Testing

// MARK: - The endpoint over the demo model

/// One-process backend settings shared by the demo-model suites (and by the engine that
/// recomputes their logits, which must store its KV cache the same way).
enum Demo {
    static let context = 512
    static let kvCache = KVCacheType.f16

    static func backend(slots: Int = 3) throws -> LocalBackend {
        let b = try LocalBackend(modelPath: Repo.demoModel,
                                 options: .init(threads: 1, slots: slots, contextLength: context, batch: 512, kvCache: kvCache))
        b.start()
        return b
    }
}

/// A client of a live endpoint on loopback, through the project's HTTP client.
struct LiveClient: Sendable {
    let endpoint: LlamaEndpoint

    func post(_ path: String, _ body: String) async throws -> Reply {
        try await send(path, method: "POST", body: body)
    }

    func get(_ path: String) async throws -> Reply {
        try await send(path, method: "GET", body: nil)
    }

    func send(_ path: String, method: String, body: String?) async throws -> Reply {
        let r = try await endpoint.request(method: method, path: path, body: body.map { Data($0.utf8) },
                                           headers: body == nil ? [:] : ["Content-Type": "application/json"])
        return Reply(status: r.status, contentType: r.header("content-type"), text: r.text)
    }
}

/// Runs `test` against the HTTP endpoint over `backend`, served on a free loopback port
/// (a real listener and real connections), and stops the server afterwards.
func withLiveServer(_ backend: any CompletionBackend, metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                    _ test: @Sendable (LiveClient) async throws -> Void) async throws {
    let server = LlamaHTTPServer(backend: backend, host: "127.0.0.1", port: 0,
                                 options: .init(streamKeepAliveInterval: 30), metrics: metrics)
    try await server.makeApplication().test(.live) { client in
        let port = try #require(client.port)
        try await test(LiveClient(endpoint: LlamaEndpoint("http://127.0.0.1:\(port)")))
    }
}

/// Runs `test` against the endpoint over a fresh one-process backend on the demo model.
func withDemoServer(slots: Int = 3, _ test: @Sendable (LocalBackend, LiveClient) async throws -> Void)
    async throws {
    let backend = try Demo.backend(slots: slots)
    defer { backend.shutdown() }
    try await withLiveServer(backend) { client in try await test(backend, client) }
}

/// Runs `test` against the endpoint over an in-memory cluster (coordinator and two workers
/// in this process) serving the demo model.
func withDemoCluster(slots: Int = 3, _ test: @Sendable (any CompletionBackend, LiveClient) async throws -> Void)
    async throws {
    let cluster = try TestCluster(workers: ["w1", "w2"], maxSequences: slots)
    defer { cluster.stop() }
    try cluster.startWorker("w1")
    try cluster.startWorker("w2")
    try cluster.waitReady()
    try await withLiveServer(cluster.coordinator) { client in try await test(cluster.coordinator, client) }
}

extension Reply {
    /// The events of a stream as JSON, without the final `[DONE]` (which must be there).
    var streamedChunks: [JSONValue] {
        let payloads = events
        #expect(payloads.last == "[DONE]", "the stream ends with [DONE]")
        return payloads.filter { $0 != "[DONE]" }.compactMap { try? JSONValue.parse($0) }
    }
}

// MARK: - The reference: log-softmax of the engine's own logits

/// The demo model in an engine of its own, fed the way the server feeds a sequence (the prompt
/// as one batch, then one token per step), so that its logits rows are the rows the server
/// sampled from. Log-probabilities are computed here from those rows, in double precision.
final class ReferenceScorer: @unchecked Sendable {
    // @unchecked: each test uses its scorer from one task at a time.
    let engine: LlamaEngine
    var vocabularySize: Int { engine.config.vocabSize }

    init() throws {
        engine = try LlamaEngine(path: Repo.demoModel, threads: 1, maxSequences: 1, contextLength: Demo.context,
                                 maxBatch: 512, kvCache: Demo.kvCache)
    }

    /// Logits rows of every position of `prompt` followed by `generated`: row `i` predicts
    /// token `i + 1`.
    func rows(prompt: [Int32], generated: [Int32] = []) throws -> [[Float]] {
        engine.reset()
        let vocab = vocabularySize
        let promptLogits = try engine.evaluate(prompt, startPosition: 0, logits: .all)
        var rows = (0..<prompt.count).map { Array(promptLogits[($0 * vocab)..<(($0 + 1) * vocab)]) }
        for (k, token) in generated.dropLast().enumerated() {
            rows.append(try engine.evaluate([token], startPosition: prompt.count + k, logits: .last))
        }
        return rows
    }

    /// Greedy continuation (highest raw logit, lowest id on ties) and the rows it came from.
    func greedy(prompt: [Int32], count: Int, stopAt eos: Int32) throws -> (tokens: [Int32], rows: [[Float]]) {
        engine.reset()
        var row = try engine.evaluate(prompt, startPosition: 0, logits: .last)
        var tokens: [Int32] = [], rows: [[Float]] = []
        while tokens.count < count {
            let next = Self.ranked(row, top: 1)[0]
            if next == eos { break }
            tokens.append(next)
            rows.append(row)
            if tokens.count < count { row = try engine.evaluate([next], startPosition: prompt.count + tokens.count - 1, logits: .last) }
        }
        return (tokens, rows)
    }

    /// `log(softmax(row))[token]`.
    static func logprob(_ row: [Float], _ token: Int32) -> Double {
        let m = Double(row.max()!)
        let sum = row.reduce(0.0) { $0 + exp(Double($1) - m) }
        return Double(row[Int(token)]) - m - log(sum)
    }

    /// The `top` token ids with the highest logits, best first, lower id first on ties.
    static func ranked(_ row: [Float], top: Int) -> [Int32] {
        Array(row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(top).map(Int32.init))
    }
}

/// Whether two log-probabilities agree (the server's are floats).
func close(_ a: Double?, _ b: Double, tolerance: Double = 2e-4) -> Bool {
    guard let a else { return false }
    return abs(a - b) <= tolerance * max(1, abs(b))
}
