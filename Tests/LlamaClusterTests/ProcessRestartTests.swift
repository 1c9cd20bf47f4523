import Foundation
import LlamaClient
import LlamaSampling
import Synchronization
import TestSupport
import Testing

/// The real executables through restarts and orderly stops: the coordinator killed with
/// SIGKILL and started again while its workers keep running, the coordinator drained by
/// SIGTERM with a stream open, and a worker leaving by SIGTERM for a standby.
@Suite("Cluster of processes: restarts, drains and handovers", .serialized, .timeLimit(.minutes(6)))
struct ProcessRestartTests {
    /// The workers of /health (workers and standbys) by name, as JSON objects.
    static func healthWorkers(_ endpoint: String) throws -> [String: [String: Any]] {
        let text = try request(method: "GET", url: endpoint + "/health").text
        let json = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
        var out: [String: [String: Any]] = [:]
        for key in ["workers", "standbys"] {
            for w in json[key] as? [[String: Any]] ?? [] { out[w["name"] as? String ?? ""] = w }
        }
        return out
    }

    /// Seconds from `start` to the first streamed piece, and the whole text.
    static func timedCompletion(_ endpoint: String, _ prompt: String, _ n: Int, since start: Date) throws -> (Double, String) {
        var first: Double?
        var text = ""
        _ = try streamCompletion(endpoint: endpoint, prompt: prompt, parameters: .greedy, maxTokens: n) { piece in
            if first == nil { first = Date().timeIntervalSince(start) }
            text += piece
        }
        return (first ?? .infinity, text)
    }

    @Test("coordinator killed with SIGKILL and restarted, workers left running (one with streamed layers) and a standby: it serves again at once and sends no weight bytes")
    func coordinatorRestart() async {
        for failure in await runBlocking({ c in try Self.coordinatorRestartBody(c) }) { Issue.record(Comment(rawValue: failure)) }
    }

    static func coordinatorRestartBody(_ c: Checks) throws {
        let procs = try ProcessClusterTests.Processes()
        defer { procs.killAll() }
        let (control, http, endpoint) = try ProcessTests.addresses()
        let manifest = try ProcessTests.manifest(procs, control: control, http: http,
                                                 workers: ["{ name: w1, threads: 1 }", "{ name: w2, threads: 1 }",
                                                           "{ name: s1, standby: true, threads: 1 }"])
        let cache = procs.logs.appendingPathComponent("cache").path
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        try procs.start("w1", "llama-worker", ProcessTests.workerArgs("w1", control: control))
        try procs.start("w2", "llama-worker", ProcessTests.workerArgs("w2", control: control, cache: cache))
        try procs.start("s1", "llama-worker", ProcessTests.workerArgs("s1", control: control, cache: cache))
        try ProcessClusterTests.waitHealthy(endpoint, procs)
        let streamed = try ProcessTests.metric(endpoint, "llamacluster_weight_bytes_served_total") ?? 0
        c.expect(streamed > 1_000_000, "w2's layers were streamed: \(streamed) bytes")
        let reference = try ProcessClusterTests.complete(endpoint, "Python is", 32)
        let before = try Self.healthWorkers(endpoint)
        c.expect(before["s1"]?["state"] as? String == "standby")

        procs.kill("coord")
        let restart = Date()
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        try waitUntil("/health 200 after the restart", timeout: 20) {
            (try? request(method: "GET", url: endpoint + "/health", timeouts: ClientTimeouts(connect: 0.5, read: 5)))?.status == 200
        }
        let healthy = Date().timeIntervalSince(restart)
        let (firstToken, text) = try Self.timedCompletion(endpoint, "Python is", 32, since: restart)
        print(String(format: "coordinator restart: /health 200 after %.3f s, first token after %.3f s", healthy, firstToken))
        c.expect(text == reference)
        // The same layers on the same workers, the standby still a standby, nothing streamed again.
        let after = try Self.healthWorkers(endpoint)
        for name in ["w1", "w2"] { c.expect(after[name]?["layers"] as? String == before[name]?["layers"] as? String) }
        try waitUntil("s1 back as a standby", timeout: 10) { try Self.healthWorkers(endpoint)["s1"]?["state"] as? String == "standby" }
        c.expect(try ProcessTests.metric(endpoint, "llamacluster_weight_bytes_served_total") == 0)
        c.expect(procs.log("w2").components(separatedBy: "fetching").count == 2, "w2 fetched its layers once:\n\(procs.log("w2"))")
        // Bounds with room for a loaded 2-core host; the figures printed above are the measurement.
        c.expect(healthy < 3, "\(healthy) s to /health 200\n\(procs.log("coord"))")
        c.expect(firstToken < 4)
    }

    @Test("SIGTERM to the coordinator with a stream open: the stream ends whole, a new request gets 503 with Retry-After, the process exits 0")
    func coordinatorDrain() async {
        for failure in await runBlocking({ c in try Self.coordinatorDrainBody(c) }) { Issue.record(Comment(rawValue: failure)) }
    }

    static func coordinatorDrainBody(_ c: Checks) throws {
        let procs = try ProcessClusterTests.Processes()
        defer { procs.killAll() }
        let (control, http, endpoint) = try ProcessTests.addresses()
        let manifest = try ProcessTests.manifest(procs, control: control, http: http, extra: "drain_timeout: 60",
                                                 workers: ["{ name: w1, threads: 1 }", "{ name: w2, threads: 1 }"])
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        for name in ["w1", "w2"] { try procs.start(name, "llama-worker", ProcessTests.workerArgs(name, control: control)) }
        try ProcessClusterTests.waitHealthy(endpoint, procs)
        let spec = StreamSet.Spec(prompt: "Once upon a time", parameters: .greedy, maxTokens: 300)
        let undisturbed = try ProcessClusterTests.complete(endpoint, spec.prompt, spec.maxTokens)

        let stream = StreamSet([spec], endpoint: endpoint)
        try waitUntil("the stream starts", timeout: 30) { stream.totalPieces >= 3 }
        guard let pid = procs.pid("coord") else { throw ProcessFailure(description: "no coordinator") }
        kill(pid, SIGTERM)
        // New requests are answered (not refused) with 503 and Retry-After while the stream runs.
        var refusal: HTTPClientResponse?
        try waitUntil("a 503 during the drain", timeout: 10) {
            let r = try request(method: "POST", url: endpoint + "/v1/completions",
                                body: Data(#"{"prompt": "Hello", "max_tokens": 4}"#.utf8))
            if r.status == 503 { refusal = r }
            return r.status == 503
        }
        c.expect(refusal?.header("retry-after") != nil)
        c.expect(refusal?.text.contains("unavailable_error") == true)
        c.expect(stream.snapshot[0].finished == false, "the stream ended before the drain was seen")
        c.expect(stream.wait(timeout: 60))
        c.expect(stream.snapshot[0].error == nil)
        c.expect(stream.snapshot[0].text == undisturbed)
        let deadline = Date().addingTimeInterval(30)
        while procs.isRunning("coord"), Date() < deadline { usleep(20_000) }
        c.expect(!procs.isRunning("coord"), "the coordinator did not exit after its drain")
        c.expect(procs.terminate("coord", timeout: 1) == 0, "\(procs.log("coord"))")
    }

    @Test("SIGTERM to a worker with a standby: the standby takes its layers before it goes, no request fails, open streams end undisturbed")
    func workerLeavesForStandby() async {
        for failure in await runBlocking({ c in try Self.workerLeavesForStandbyBody(c) }) { Issue.record(Comment(rawValue: failure)) }
    }

    static func workerLeavesForStandbyBody(_ c: Checks) throws {
        let procs = try ProcessClusterTests.Processes()
        defer { procs.killAll() }
        let (control, http, endpoint) = try ProcessTests.addresses()
        let manifest = try ProcessTests.manifest(procs, control: control, http: http,
                                                 workers: ["{ name: w1, threads: 1 }", "{ name: w2, threads: 1 }",
                                                           "{ name: s1, standby: true, threads: 1 }"])
        let cache = procs.logs.appendingPathComponent("cache").path
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        try procs.start("w1", "llama-worker", ProcessTests.workerArgs("w1", control: control))
        try procs.start("w2", "llama-worker", ProcessTests.workerArgs("w2", control: control))
        try procs.start("s1", "llama-worker", ProcessTests.workerArgs("s1", control: control, cache: cache))
        try ProcessClusterTests.waitHealthy(endpoint, procs)
        let specs = (0..<4).map { i in
            StreamSet.Spec(prompt: ["Once upon a time", "The little dog", "Python is", "Mom said"][i],
                           parameters: i < 2 ? .greedy : .seeded(UInt64(40 + i)), maxTokens: 240)
        }
        let calm = StreamSet(specs, endpoint: endpoint)
        c.expect(calm.wait(timeout: 120))
        let w2Layers = try Self.healthWorkers(endpoint)["w2"]?["layers"] as? String

        let streams = StreamSet(specs, endpoint: endpoint)
        try waitUntil("every stream under way", timeout: 30) { streams.allMidStream && streams.totalPieces >= 24 }
        // Plain requests keep coming during the handover; none may fail.
        let side = Mutex((sent: 0, failed: [String]()))
        let stopSide = Atomic<Bool>(false)
        let sideDone = DispatchSemaphore(value: 0)
        Thread {
            while !stopSide.load(ordering: .relaxed) {
                do {
                    let r = try request(method: "POST", url: endpoint + "/v1/completions",
                                        body: Data(#"{"prompt": "Hi", "max_tokens": 6, "temperature": 0}"#.utf8))
                    side.withLock { $0.sent += 1; if r.status != 200 { $0.failed.append("\(r.status) \(r.text)") } }
                } catch {
                    side.withLock { $0.sent += 1; $0.failed.append("\(error)") }
                }
            }
            sideDone.signal()
        }.start()
        let status = procs.terminate("w2", timeout: 30)
        c.expect(status == 0, "w2 did not leave cleanly:\n\(procs.log("w2"))")
        c.expect(streams.wait(timeout: 120))
        stopSide.store(true, ordering: .relaxed)
        sideDone.wait()
        for (i, s) in streams.snapshot.enumerated() {
            c.expect(s.error == nil, "stream \(i): \(s.error ?? "")")
            c.expect(s.text == calm.snapshot[i].text, "stream \(i) differs from its undisturbed text")
        }
        let (sent, failed) = side.withLock { ($0.sent, $0.failed) }
        c.expect(sent > 0 && failed.isEmpty, "\(failed.count) of \(sent) requests during the handover failed: \(failed.prefix(3))")
        let after = try Self.healthWorkers(endpoint)
        c.expect(after["s1"]?["layers"] as? String == w2Layers && after["s1"]?["state"] as? String == "ready")
        c.expect(after["w2"]?["state"] as? String == "gone")
        c.expect(try ProcessTests.metric(endpoint, "llamacluster_requests_failed_total") ?? 0 == 0)
    }
}
