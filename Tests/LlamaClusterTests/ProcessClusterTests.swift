import TestSupport
import ClusterTransport
import Foundation
import GGUF
import LlamaTokenizer
import LlamaClient
import LlamaSampling
import Synchronization
import Testing

/// The real executables: `llama-coord start` and two `llama-worker join` processes on loopback,
/// driven through the HTTP endpoint the way a user would.
@Suite("Cluster of processes over HTTP", .serialized, .timeLimit(.minutes(4)))
struct ProcessClusterTests {
    static var binDirectory: URL { Repo.binDirectory }

    final class Processes: @unchecked Sendable {
        var running: [String: Process] = [:]
        let logs: URL

        init() throws {
            logs = FileManager.default.temporaryDirectory.appendingPathComponent("llamacluster-proc-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        }

        /// Starts `tool` with `args`, inside network namespace `netns` if one is given.
        func start(_ name: String, _ tool: String, _ args: [String], netns: String? = nil) throws {
            let p = Process()
            let path = ProcessClusterTests.binDirectory.appendingPathComponent(tool)
            if let netns, let ip = NetworkNamespaces.ipTool {
                p.executableURL = URL(fileURLWithPath: ip)
                p.arguments = ["netns", "exec", netns, path.path] + args
            } else {
                p.executableURL = path
                p.arguments = args
            }
            let log = logs.appendingPathComponent("\(name).log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            p.standardOutput = handle
            p.standardError = handle
            try p.run()
            running[name] = p
        }

        /// SIGKILL: the process vanishes without a word.
        func kill(_ name: String) {
            guard let p = running.removeValue(forKey: name) else { return }
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }

        func log(_ name: String) -> String {
            (try? String(contentsOf: logs.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
        }

        func stopAll() {
            for (_, p) in running where p.isRunning { p.terminate() }
            for (_, p) in running { p.waitUntilExit() }
            running.removeAll()
            try? FileManager.default.removeItem(at: logs)
        }
    }

    static func waitHealthy(_ endpoint: String, _ procs: Processes, timeout: Double = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let r = try? request(method: "GET", url: endpoint + "/health"), r.status == 200 { return }
            usleep(100_000)
        }
        throw Timeout(description: "no healthy cluster after \(timeout) s\n" + ["coord", "w1", "w2"].map { procs.log($0) }.joined(separator: "\n"))
    }

    /// The two-worker manifest of these tests (demo model, 1.5 s heartbeat timeout), written
    /// beside the logs.
    static func writeManifest(_ procs: Processes, control: String, http: String, activations: String,
                              extra: String = "") throws -> URL {
        let manifest = procs.logs.appendingPathComponent("cluster.yaml")
        try """
            model: \(Repo.demoModel)
            coordinator: { control: "\(control)", http: "\(http)", threads: 1 }
            activations: \(activations)
            max_sequences: 4
            context: 512
            heartbeat_timeout: 1.5
            \(extra)
            workers:
              - { name: w1, threads: 1 }
              - { name: w2, threads: 1 }
            """.write(to: manifest, atomically: true, encoding: .utf8)
        return manifest
    }

    /// Streams a long completion and runs `lose` after three tokens, waits until /health
    /// answers 503 naming `worker` (down for longer than the heartbeat timeout), then runs
    /// `restore`: the stream must go on to the end with exactly the undisturbed text.
    static func expectRecovery(_ c: Checks, _ endpoint: String, worker: String, prompt: String = "Python is", tokens: Int = 200,
                               lose: () -> Void, restore: () throws -> Void) throws {
        let undisturbed = try complete(endpoint, prompt, tokens)
        var streamed = 0
        var text = ""
        var sawMissing = false
        _ = try streamCompletion(endpoint: endpoint, prompt: prompt, parameters: .greedy, maxTokens: tokens) { piece in
            text += piece
            streamed += 1
            guard streamed == 3 else { return }
            lose()
            try waitUntil("/health naming \(worker)", timeout: 15) {
                let health = try request(method: "GET", url: endpoint + "/health")
                return health.status == 503 && health.text.contains(worker)
            }
            sawMissing = true
            try restore()
        }
        c.expect(sawMissing, "/health never named \(worker)")
        c.expect(text == undisturbed, "the stream differs from its undisturbed text")
    }

    static func complete(_ endpoint: String, _ prompt: String, _ n: Int) throws -> String {
        var text = ""
        _ = try streamCompletion(endpoint: endpoint, prompt: prompt, parameters: .greedy, maxTokens: n) { text += $0 }
        return text
    }

    @Test("start, serve concurrent streams, survive a killed worker and garbage")
    func fullLifecycle() async throws {
        let expected = try await singleProcessTokens([1, 5132, 338], maxTokens: 24)
        // Processes and blocking calls for a minute: on a thread of its own, not a cooperative one.
        for failure in await runBlocking({ c in try Self.fullLifecycleBody(c, expected: expected) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    static func fullLifecycleBody(_ c: Checks, expected: [Int32]) throws {
        let procs = try Processes()
        defer { procs.stopAll() }
        let control = try LoopbackPort.freeEndpoint()
        let httpPort = try LoopbackPort.pickFree()
        let endpoint = "http://127.0.0.1:\(httpPort)"
        let manifest = try Self.writeManifest(procs, control: control, http: "127.0.0.1:\(httpPort)", activations: "f32")
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        let cache = procs.logs.appendingPathComponent("cache").path
        try procs.start("w1", "llama-worker", ["join", "--coordinator", control, "--name", "w1", "--threads", "1",
                                               "--model", Repo.demoModel])
        try procs.start("w2", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                               "--cache-dir", cache])
        try Self.waitHealthy(endpoint, procs)

        // The cluster writes what one process writes.
        let engine = try LlamaEngineText()
        c.expect(try Self.complete(endpoint, "Python is", 24) == engine.decode(expected))

        // Eight concurrent streams each get what they get alone.
        let prompts = (0..<8).map { ["Python is", "Q: What is the meaning of life?\nA:", "The os module", "def main():"][$0 % 4] + String(repeating: " ", count: $0 / 4) }
        var alone: [String] = []
        for p in prompts { alone.append(try Self.complete(endpoint, p, 20)) }
        let together = Mutex([String](repeating: "", count: prompts.count))
        DispatchQueue.concurrentPerform(iterations: prompts.count) { i in
            let t = (try? Self.complete(endpoint, prompts[i], 20)) ?? "(failed)"
            together.withLock { $0[i] = t }
        }
        c.expect(together.withLock { $0 } == alone, "eight streams at once differ from each alone")

        // Garbage on every POST route: 400, and the server keeps serving.
        for route in ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"] {
            let r = try request(method: "POST", url: endpoint + route, body: Data("{\"prompt\": [1, 2".utf8),
                                headers: ["Content-Type": "application/json"])
            c.expect(r.status == 400, "\(route): \(r.status) \(r.text)")
        }
        let tooLong = String(repeating: "word ", count: 600)
        let r = try request(method: "POST", url: endpoint + "/v1/completions",
                            body: Data("{\"prompt\": \"\(tooLong)\", \"max_tokens\": 4}".utf8), headers: ["Content-Type": "application/json"])
        c.expect(r.status == 400)

        // A worker killed mid-stream and started again after the heartbeat timeout: the
        // stream pauses and ends with exactly the undisturbed text (its layers now come from
        // its cache).
        try Self.expectRecovery(c, endpoint, worker: "w2", lose: { procs.kill("w2") }) {
            try procs.start("w2", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                                   "--cache-dir", cache])
        }
        try Self.waitHealthy(endpoint, procs)
        c.expect(try Self.complete(endpoint, "Python is", 24) == engine.decode(expected))
        c.expect(procs.log("w2").contains("using cached weights"))
    }
}

/// Decodes generated tokens the way the endpoint streams them (no leading-space removal).
struct LlamaEngineText {
    let tokenizer: LlamaTokenizer
    init() throws { tokenizer = LlamaTokenizer(vocabulary: try Vocabulary(gguf: try GGUFFile(path: Repo.demoModel))) }
    func decode(_ ids: [Int32]) -> String {
        var d = tokenizer.makeStreamingDecoder(startsText: false)
        var s = ""
        for id in ids { s += d.append(id) }
        return s + d.finish()
    }
}
