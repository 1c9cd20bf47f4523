import ClusterTransport
import Foundation
import LlamaClient
import LlamaSampling
import Synchronization
import TestSupport

/// What the process tests beyond ``ProcessClusterTests`` share: ending processes by signal,
/// manifests of any shape, concurrent streams on their own threads, and /metrics values.
extension ProcessClusterTests.Processes {
    /// SIGKILL to every process still running (workers first), then waits for each: nothing
    /// is left behind however the test ended, and no graceful leave can hold the test up.
    func killAll() {
        let names = running.keys.sorted { a, b in (a == "coord" ? 1 : 0, a) < (b == "coord" ? 1 : 0, b) }
        for name in names { kill(name) }
        if ProcessInfo.processInfo.environment["LLAMA_TEST_KEEP_LOGS"] == nil {
            try? FileManager.default.removeItem(at: logs)
        } else {
            print("logs kept in \(logs.path)")
        }
    }

    /// SIGTERM to `name`; waits up to `timeout` seconds for it to exit and returns its exit
    /// status (nil: still running after the timeout, then it is killed).
    func terminate(_ name: String, timeout: Double) -> Int32? {
        guard let p = running[name] else { return nil }
        p.terminate()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning, Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(name)
            return nil
        }
        running[name] = nil
        return p.terminationStatus
    }

    /// Whether `name` was started and has not exited.
    func isRunning(_ name: String) -> Bool { running[name]?.isRunning == true }

    func pid(_ name: String) -> Int32? { running[name]?.processIdentifier }
}

enum ProcessTests {
    /// A manifest for the demo model with the given worker entries (YAML flow maps), beside
    /// the logs of `procs`.
    static func manifest(_ procs: ProcessClusterTests.Processes, control: String, http: String,
                         heartbeat: Double = 1, extra: String = "", workers: [String]) throws -> URL {
        let url = procs.logs.appendingPathComponent("cluster.yaml")
        try """
            model: \(Repo.demoModel)
            coordinator: { control: "\(control)", http: "\(http)", threads: 1 }
            activations: f16
            frames_in_flight: 1
            max_sequences: 8
            context: 512
            heartbeat_timeout: \(heartbeat)
            \(extra)
            workers:
            \(workers.map { "  - " + $0 }.joined(separator: "\n"))
            """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Free loopback addresses: the control endpoint, the HTTP port and the endpoint URL.
    static func addresses() throws -> (control: String, http: String, endpoint: String) {
        let control = try LoopbackPort.freeEndpoint()
        let port = try LoopbackPort.pickFree()
        return (control, "127.0.0.1:\(port)", "http://127.0.0.1:\(port)")
    }

    /// `llama-worker join` arguments for `name`: its own model file, or streamed layers kept in `cache`.
    static func workerArgs(_ name: String, control: String, cache: String? = nil) -> [String] {
        ["join", "--coordinator", control, "--name", name, "--threads", "1", "--leave-timeout", "20"]
            + (cache.map { ["--cache-dir", $0] } ?? ["--model", Repo.demoModel])
    }

    /// The value of a /metrics sample (`name` with its labels, as printed), or nil.
    static func metric(_ endpoint: String, _ name: String) throws -> Double? {
        let text = try request(method: "GET", url: endpoint + "/metrics").text
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// Streams running on their own threads (the blocking client must not hold the test's
/// cooperative threads), with their text, token counts and outcome readable at any time.
final class StreamSet: Sendable {
    struct Spec: Sendable {
        var prompt: String
        var parameters: SamplingParameters
        var maxTokens: Int
    }

    struct State: Sendable {
        var text = ""
        var pieces = 0
        var finished = false
        var error: String?
    }

    let specs: [Spec]
    private let states: Mutex<[State]>
    private let group = DispatchGroup()

    /// Starts one thread per spec against `endpoint`.
    init(_ specs: [Spec], endpoint: String, readTimeout: Double = 60) {
        self.specs = specs
        states = Mutex([State](repeating: State(), count: specs.count))
        for (i, spec) in specs.enumerated() {
            group.enter()
            let t = Thread { [self] in
                defer { group.leave() }
                do {
                    _ = try streamCompletion(endpoint: endpoint, prompt: spec.prompt, parameters: spec.parameters,
                                             maxTokens: spec.maxTokens, timeouts: ClientTimeouts(read: readTimeout)) { piece in
                        states.withLock { $0[i].text += piece; $0[i].pieces += 1 }
                    }
                    states.withLock { $0[i].finished = true }
                } catch {
                    states.withLock { $0[i].error = "\(error)"; $0[i].finished = true }
                }
            }
            t.start()
        }
    }

    var snapshot: [State] { states.withLock { $0 } }
    /// Pieces of text received over every stream.
    var totalPieces: Int { snapshot.reduce(0) { $0 + $1.pieces } }
    /// Every stream has received text and none has ended.
    var allMidStream: Bool { snapshot.allSatisfy { $0.pieces > 0 && !$0.finished } }

    /// Waits for every stream to end; false after `timeout` seconds.
    func wait(timeout: Double) -> Bool { group.wait(timeout: .now() + timeout) == .success }
}
