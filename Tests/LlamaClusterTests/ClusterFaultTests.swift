import ClusterTransport
import Foundation
import LlamaCoordinator
import LlamaInference
import LlamaSampling
import Synchronization
import TestSupport
import Testing

/// Faults injected by the in-memory network: frames lost, doubled, delayed and overtaken;
/// workers lost at every stage during prefill and decode, during a replay, for good (a standby
/// takes over) or gracefully; a worker cut off. Every request ends with exactly the tokens an
/// undisturbed run gives, greedy and seeded. No processes, no sockets.
@Suite("Cluster under faults (in memory)", .serialized, .timeLimit(.minutes(5)))
struct ClusterFaultTests {
    static let prompt: [Int32] = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 450]

    /// Counts messages of one kind so a rule can pick the n-th.
    final class Counter: Sendable {
        let n = Mutex(0)
        func next() -> Int { n.withLock { $0 += 1; return $0 } }
    }

    /// Streams `job`, calls `fault` once `after` tokens have arrived (0: right after submitting),
    /// and returns every token of choice 0.
    static func stream(_ cluster: TestCluster, _ job: CompletionJob, after: Int,
                       _ fault: () throws -> Void) async throws -> [Int32] {
        var tokens: [Int32] = []
        var done = false
        if after == 0 { try fault(); done = true }
        let stream = try cluster.coordinator.submit(job)
        for try await event in stream {
            guard case let .text(_, _, t) = event else { continue }
            tokens += t.map(\.token)
            if !done, tokens.count >= after {
                done = true
                try fault()
            }
        }
        #expect(done, "the fault was never injected")
        return tokens
    }

    @Test("frames lost, doubled, delayed and overtaken on the data path: four concurrent requests get their undisturbed tokens")
    func dataPathFaults() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"], batch: 8, frameTimeout: 0.5)
        defer { cluster.stop() }
        try cluster.startWorker("w1")
        try cluster.startWorker("w2")
        try cluster.waitReady()
        var jobs: [CompletionJob] = []
        for i in 0..<4 {
            let parameters: SamplingParameters = i % 2 == 0 ? .greedy : .seeded(UInt64(7 + i))
            let prompt: [Int32] = Self.prompt + [Int32(29871 + i)]
            jobs.append(CompletionJob(promptTokens: prompt, parameters: parameters, maxTokens: 40))
        }
        var alone: [[Int32]] = []
        for j in jobs { alone.append(try await singleProcessTokens(j.promptTokens, maxTokens: 40, parameters: j.parameters)) }
        let counter = Counter()
        cluster.network!.intercept { m in
            guard m.kind == .data else { return .deliver }
            let n = counter.next()
            if n == 9 || n == 31 { return .drop }               // lost: found by the frame timeout, redone
            if n % 5 == 0 { return .duplicate }                 // doubled: the second copy is ignored
            if n % 7 == 0 { return .delay(0.03) }               // late: later frames overtake it
            return .deliver
        }
        let together = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, j) in jobs.enumerated() { group.addTask { (i, try await cluster.run(j)[0]) } }
            var out = [[Int32]](repeating: [], count: jobs.count)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        cluster.network!.intercept(nil)
        #expect(counter.n.withLock { $0 } > 31, "the faults were reached")
        #expect(together == alone)
        #expect(cluster.coordinator.counters().requestsFailed == 0)
    }

    enum Phase: String, CaseIterable, Sendable { case prefill, decode }

    @Test("a worker lost at any stage, in prefill or decode, greedy or seeded: the stream pauses and ends with the undisturbed text",
          arguments: [("w1", Phase.prefill), ("w2", .prefill), ("w3", .prefill), ("w1", .decode), ("w2", .decode), ("w3", .decode)])
    func lossAtEveryStage(worker: String, phase: Phase) async throws {
        let cluster = try TestCluster(workers: ["w1", "w2", "w3"], heartbeatTimeout: 1, batch: 4)
        defer { cluster.stop() }
        for w in ["w1", "w2", "w3"] { try cluster.startWorker(w) }
        try cluster.waitReady()
        let parameters: SamplingParameters = worker == "w2" ? .seeded(11) : .greedy
        let undisturbed = try await singleProcessTokens(Self.prompt, maxTokens: 48, parameters: parameters)
        let job = CompletionJob(promptTokens: Self.prompt, parameters: parameters, maxTokens: 48)
        let got = try await Self.stream(cluster, job, after: phase == .prefill ? 0 : 6) {
            cluster.kill(worker)
            try waitUntil("\(worker) reported missing") { cluster.coordinator.health().missing == [worker] }
            try cluster.startWorker(worker)
        }
        #expect(got == undisturbed)
        try waitUntil("the recovery counted", timeout: 5) { cluster.coordinator.counters().recoveries >= 1 }
        #expect(cluster.coordinator.counters().requestsFailed == 0)
    }

    @Test("a second worker lost while the first loss is being replayed: the stream still ends with the undisturbed text")
    func lossDuringReplay() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"], heartbeatTimeout: 1, batch: 4)
        defer { cluster.stop() }
        try cluster.startWorker("w1")
        try cluster.startWorker("w2")
        try cluster.waitReady()
        let undisturbed = try await singleProcessTokens(Self.prompt, maxTokens: 60)
        let job = CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 60)
        let got = try await Self.stream(cluster, job, after: 20) {
            cluster.kill("w2")
            try waitUntil("w2 reported missing") { cluster.coordinator.health().missing == ["w2"] }
            try cluster.startWorker("w2")
            // Replay of 34 tokens in frames of 4 starts as soon as w2 is ready: cut w1 then.
            try waitUntil("w2 back", timeout: 10) { cluster.coordinator.health().missing.isEmpty }
            cluster.kill("w1")
            try waitUntil("w1 reported missing") { cluster.coordinator.health().missing == ["w1"] }
            try cluster.startWorker("w1")
        }
        #expect(got == undisturbed)
        try waitUntil("both recoveries counted", timeout: 5) { cluster.coordinator.counters().recoveries >= 2 }
    }

    @Test("a worker that never comes back: the standby takes its layers, the stream ends undisturbed, and the returning worker is the standby")
    func standbyTakesOver() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"], standbys: ["s1"], heartbeatTimeout: 1)
        defer { cluster.stop() }
        for w in ["w1", "w2", "s1"] { try cluster.startWorker(w) }
        try cluster.waitReady()
        try waitUntil("s1 waiting as a standby") { cluster.coordinator.health().workers.first { $0.name == "s1" }?.state == "standby" }
        let undisturbed = try await singleProcessTokens(Self.prompt, maxTokens: 40, parameters: .seeded(3))
        let job = CompletionJob(promptTokens: Self.prompt, parameters: .seeded(3), maxTokens: 40)
        let got = try await Self.stream(cluster, job, after: 8) { cluster.kill("w2") }
        #expect(got == undisturbed)
        try waitUntil("s1 runs w2's layers (\(cluster.coordinator.health().workers))", timeout: 5) {
            cluster.coordinator.health().workers.first { $0.name == "s1" }?.layers != nil
        }
        #expect(cluster.coordinator.health().ready)
        // A takeover by a standby is a recovery like a rejoin (it was not counted when the
        // standby covered the layers in the same instant the worker went missing).
        try waitUntil("the takeover counted as a recovery", timeout: 5) { cluster.coordinator.counters().recoveries == 1 }
        try cluster.startWorker("w2")
        try waitUntil("w2 waiting as the standby") { cluster.coordinator.health().workers.first { $0.name == "w2" }?.state == "standby" }
        #expect(try await cluster.complete(Self.prompt, maxTokens: 12) == (try await singleProcessTokens(Self.prompt, maxTokens: 12)))
    }

    @Test("a worker leaving gracefully hands its layers to the standby without a failed request or a changed token")
    func gracefulLeave() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"], standbys: ["s1"], heartbeatTimeout: 2)
        defer { cluster.stop() }
        for w in ["w1", "w2", "s1"] { try cluster.startWorker(w) }
        try cluster.waitReady()
        try waitUntil("s1 waiting as a standby") { cluster.coordinator.health().workers.first { $0.name == "s1" }?.state == "standby" }
        let undisturbed = try await singleProcessTokens(Self.prompt, maxTokens: 40)
        let job = CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 40)
        let start = Date()
        let got = try await Self.stream(cluster, job, after: 8) { cluster.leave("w2") }
        #expect(got == undisturbed)
        #expect(Date().timeIntervalSince(start) < 2, "the handover does not wait for the 2 s heartbeat timeout")
        #expect(cluster.coordinator.counters().requestsFailed == 0)
        try waitUntil("s1 runs w2's layers", timeout: 5) { cluster.coordinator.health().workers.first { $0.name == "s1" }?.layers != nil }
    }

    @Test("a worker cut off from the network for longer than the heartbeat timeout: streams pause and resume undisturbed once it is back")
    func partitionAndHeal() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"], heartbeatTimeout: 1)
        defer { cluster.stop() }
        try cluster.startWorker("w1")
        try cluster.startWorker("w2")
        try cluster.waitReady()
        let undisturbed = try await singleProcessTokens(Self.prompt, maxTokens: 40)
        let job = CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 40)
        let got = try await Self.stream(cluster, job, after: 6) {
            cluster.network!.partition("w1")
            try waitUntil("w1 reported missing") { cluster.coordinator.health().missing == ["w1"] }
            cluster.network!.heal("w1")
        }
        #expect(got == undisturbed)
        try waitUntil("the recovery counted", timeout: 5) { cluster.coordinator.counters().recoveries >= 1 }
    }

    @Test("every control message to a worker doubled: joins, assignments and heartbeats are idempotent")
    func duplicatedControl() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"])
        defer { cluster.stop() }
        cluster.network!.intercept { m in m.kind == .data ? .deliver : .duplicate }
        try cluster.startWorker("w1")
        try cluster.startWorker("w2")
        try cluster.waitReady()
        #expect(try await cluster.complete(Self.prompt, maxTokens: 16) == (try await singleProcessTokens(Self.prompt, maxTokens: 16)))
        cluster.network!.intercept(nil)
    }
}
