import Foundation
import LlamaClient
import LlamaSampling
import TestSupport
import Testing

/// The real executables under chaos: a coordinator and three workers on loopback, eight
/// concurrent streams, and twenty SIGKILLs of random workers while they stream, each worker
/// kept down until the coordinator has counted it missing (longer than the heartbeat timeout)
/// and then started again. Every stream must end with the text it has undisturbed.
@Suite("Cluster of processes under chaos", .serialized, .timeLimit(.minutes(10)))
struct ProcessChaosTests {
    static let kills = 20
    static let tokens = 320

    /// Four greedy and four seeded (temperature 0.8) streams, each a different prompt.
    static let specs: [StreamSet.Spec] = {
        let prompts = ["Once upon a time", "The little dog", "Python is", "Tom and Sue went to the park.",
                       "One day, a bird", "The sun was hot and", "Mom said", "There was a big tree"]
        return prompts.enumerated().map { i, p in
            StreamSet.Spec(prompt: p, parameters: i < 4 ? .greedy : .seeded(UInt64(100 + i)), maxTokens: tokens)
        }
    }()

    @Test("20 SIGKILLs of random workers mid-stream, each down longer than the heartbeat timeout: 8 streams (4 greedy, 4 seeded) end with their undisturbed text")
    func twentyKills() async {
        for failure in await runBlocking({ c in try Self.twentyKillsBody(c) }) { Issue.record(Comment(rawValue: failure)) }
    }

    static func twentyKillsBody(_ c: Checks) throws {
        let procs = try ProcessClusterTests.Processes()
        defer { procs.killAll() }
        let (control, http, endpoint) = try ProcessTests.addresses()
        let manifest = try ProcessTests.manifest(procs, control: control, http: http, heartbeat: 1, extra: "recovery_timeout: 60",
                                                 workers: ["{ name: w1, layers: \"0-1\", threads: 1 }",
                                                           "{ name: w2, layers: \"2-3\", threads: 1 }",
                                                           "{ name: w3, layers: \"4-5\", threads: 1 }"])
        let cache = procs.logs.appendingPathComponent("cache").path
        // w2 has no model file: its layers are streamed once, then come from its cache.
        let args: [String: [String]] = [
            "w1": ProcessTests.workerArgs("w1", control: control),
            "w2": ProcessTests.workerArgs("w2", control: control, cache: cache),
            "w3": ProcessTests.workerArgs("w3", control: control),
        ]
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path, "--log-level", "info"])
        for name in ["w1", "w2", "w3"] { try procs.start(name, "llama-worker", args[name]!) }
        try ProcessClusterTests.waitHealthy(endpoint, procs)
        func logs() -> String { ["coord", "w1", "w2", "w3"].map { "== \($0)\n" + procs.log($0).suffix(3000) }.joined(separator: "\n") }

        // The undisturbed texts, from the same cluster and the same eight streams at once.
        let started = Date()
        let calm = StreamSet(Self.specs, endpoint: endpoint)
        c.expect(calm.wait(timeout: 240), "undisturbed streams did not end")
        let undisturbed = calm.snapshot
        for s in undisturbed { c.expect(s.error == nil && s.pieces > 0, "undisturbed stream: \(s.error ?? "no text")") }
        let calmSeconds = Date().timeIntervalSince(started)
        print("chaos: undisturbed pieces per stream \(undisturbed.map(\.pieces))")

        var rng = SeededGenerator(seed: 13)
        var killed = 0, rounds = 0
        while killed < Self.kills {
            rounds += 1
            let streams = StreamSet(Self.specs, endpoint: endpoint)
            var killedThisRound = 0
            try waitUntil("every stream of round \(rounds) under way", timeout: 60) {
                streams.allMidStream || streams.snapshot.contains { $0.finished }
            }
            while killed < Self.kills {
                // A kill lands while all eight are mid-stream, after a random number of new
                // pieces (zero: while the last recovery's replay may still run).
                let before = streams.totalPieces
                let more = Int(rng.next() % 24)
                try waitUntil("streams progress", timeout: 60) {
                    streams.totalPieces >= before + more || !streams.allMidStream
                }
                guard streams.allMidStream else { break }
                let victim = ["w1", "w2", "w3"][Int(rng.next() % 3)]
                let downAt = Date()
                procs.kill(victim)
                killed += 1
                killedThisRound += 1
                do {
                    try waitUntil("/health naming \(victim)", timeout: 20) {
                        let h = try request(method: "GET", url: endpoint + "/health")
                        return h.status == 503 && h.text.contains(victim)
                    }
                } catch {
                    c.fail("kill \(killed): \(error)\n\(logs())")
                    throw error
                }
                // Missing is counted from its last heartbeat; it stays down past the timeout from the kill too.
                let down = Date().timeIntervalSince(downAt)
                if down < 1.25 { usleep(useconds_t((1.25 - down) * 1e6)) }
                try procs.start(victim, "llama-worker", args[victim]!)
                try ProcessClusterTests.waitHealthy(endpoint, procs, timeout: 30)
            }
            c.expect(streams.wait(timeout: 240), "streams of round \(rounds) did not end\n\(logs())")
            for (i, s) in streams.snapshot.enumerated() {
                c.expect(s.error == nil, "round \(rounds), stream \(i): \(s.error ?? "")\n\(logs())")
                c.expect(s.text == undisturbed[i].text, "round \(rounds), stream \(i) (\(Self.specs[i].prompt)) differs from its undisturbed text")
            }
            if killedThisRound == 0 {
                c.fail("a whole round of streams ended without a kill\n\(logs())")
                break
            }
        }
        c.expect(killed == Self.kills)
        // The coordinator counted a recovery for every loss and replayed the paused sequences.
        let recoveries = try ProcessTests.metric(endpoint, "llamacluster_recoveries_total") ?? 0
        let replayed = try ProcessTests.metric(endpoint, "llamacluster_replayed_tokens_total") ?? 0
        c.expect(recoveries >= Double(Self.kills), "\(recoveries) recoveries for \(Self.kills) kills")
        c.expect(replayed > 0)
        let failed = try ProcessTests.metric(endpoint, "llamacluster_requests_failed_total") ?? 0
        c.expect(failed == 0)
        print("chaos: \(killed) kills over \(rounds) rounds of 8 streams in \(Int(Date().timeIntervalSince(started))) s (undisturbed round \(Int(calmSeconds)) s), \(Int(recoveries)) recoveries, \(Int(replayed)) tokens replayed")
    }
}
