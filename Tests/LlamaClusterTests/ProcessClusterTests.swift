import ClusterTransport
import Foundation
import LlamaClient
import LlamaSampling
import Testing

/// The real executables: `llama-coord start` and two `llama-worker join` processes on loopback,
/// driven through the HTTP endpoint the way a user would.
@Suite("Cluster of processes over HTTP", .serialized, .timeLimit(.minutes(4)))
struct ProcessClusterTests {
    /// Directory holding the built executables (beside the test bundle).
    static var binDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

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
    static func writeManifest(_ procs: Processes, control: String, http: String, activations: String) throws -> URL {
        let manifest = procs.logs.appendingPathComponent("cluster.yaml")
        try """
            model: \(Repo.demoModel)
            coordinator: { control: "\(control)", http: "\(http)", threads: 1 }
            activations: \(activations)
            max_sequences: 4
            context: 512
            heartbeat_timeout: 1.5
            workers:
              - { name: w1, threads: 1 }
              - { name: w2, threads: 1 }
            """.write(to: manifest, atomically: true, encoding: .utf8)
        return manifest
    }

    /// Streams a long completion and runs `lose` after three tokens: the stream must end with an
    /// error naming `worker` within 15 s, and /health must answer 503 naming it.
    static func expectLossReported(_ endpoint: String, worker: String, lose: () -> Void) throws {
        let start = Date()
        var streamed = 0
        var failure: Error?
        do {
            _ = try streamCompletion(endpoint: endpoint, prompt: "Python is", parameters: .greedy, maxTokens: 450) { _ in
                streamed += 1
                if streamed == 3 { lose() }
            }
        } catch {
            failure = error
        }
        #expect(failure != nil && "\(failure!)".contains(worker), "\(String(describing: failure))")
        #expect(Date().timeIntervalSince(start) < 15)
        let health = try request(method: "GET", url: endpoint + "/health")
        #expect(health.status == 503 && health.text.contains(worker), "\(health.text)")
    }

    static func complete(_ endpoint: String, _ prompt: String, _ n: Int) throws -> String {
        var text = ""
        _ = try streamCompletion(endpoint: endpoint, prompt: prompt, parameters: .greedy, maxTokens: n) { text += $0 }
        return text
    }

    @Test("start, serve concurrent streams, survive a killed worker and garbage")
    func fullLifecycle() async throws {
        let procs = try Processes()
        defer { procs.stopAll() }
        let control = try LoopbackPort.freeEndpoint()
        let httpPort = try LoopbackPort.pickFree()
        let endpoint = "http://127.0.0.1:\(httpPort)"
        let manifest = try Self.writeManifest(procs, control: control, http: "127.0.0.1:\(httpPort)", activations: "f32")
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        let cache = procs.logs.appendingPathComponent("cache").path
        try procs.start("w1", "llama-worker", ["join", "--coordinator", control, "--name", "w1", "--threads", "1",
                                               "--model", Repo.demoModel, "--listen", "tcp://127.0.0.1:0"])
        try procs.start("w2", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                               "--cache-dir", cache, "--listen", "tcp://127.0.0.1:0"])
        try Self.waitHealthy(endpoint, procs)

        // The cluster writes what one process writes.
        let expected = try singleProcessTokens([1, 5132, 338], maxTokens: 24)
        let engine = try LlamaEngineText()
        #expect(try Self.complete(endpoint, "Python is", 24) == engine.decode(expected))

        // Eight concurrent streams each get what they get alone.
        let prompts = (0..<8).map { ["Python is", "Q: What is the meaning of life?\nA:", "The os module", "def main():"][$0 % 4] + String(repeating: " ", count: $0 / 4) }
        var alone: [String] = []
        for p in prompts { alone.append(try Self.complete(endpoint, p, 20)) }
        let together = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, p) in prompts.enumerated() { group.addTask { (i, try Self.complete(endpoint, p, 20)) } }
            var out = [String](repeating: "", count: prompts.count)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        #expect(together == alone)

        // Garbage on every POST route: 400, and the server keeps serving.
        for route in ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"] {
            let r = try request(method: "POST", url: endpoint + route, body: Data("{\"prompt\": [1, 2".utf8),
                                headers: ["Content-Type": "application/json"])
            #expect(r.status == 400, "\(route): \(r.status) \(r.text)")
        }
        let tooLong = String(repeating: "word ", count: 600)
        let r = try request(method: "POST", url: endpoint + "/v1/completions",
                            body: Data("{\"prompt\": \"\(tooLong)\", \"max_tokens\": 4}".utf8), headers: ["Content-Type": "application/json"])
        #expect(r.status == 400)

        // A worker killed mid-stream: the client gets a clear error quickly, /health names it.
        try Self.expectLossReported(endpoint, worker: "w2") { procs.kill("w2") }

        // It rejoins (its layers now come from its cache) and the cluster serves again.
        try procs.start("w2", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                               "--cache-dir", cache, "--listen", "tcp://127.0.0.1:0"])
        try Self.waitHealthy(endpoint, procs)
        #expect(try Self.complete(endpoint, "Python is", 24) == engine.decode(expected))
        #expect(procs.log("w2").contains("using cached weights"))
    }
}

/// Decodes generated tokens the way the endpoint streams them (no leading-space removal).
struct LlamaEngineText {
    let tokenizer: LlamaTokenizerBox
    init() throws { tokenizer = try LlamaTokenizerBox(path: Repo.demoModel) }
    func decode(_ ids: [Int32]) -> String { tokenizer.decodeContinuation(ids) }
}
