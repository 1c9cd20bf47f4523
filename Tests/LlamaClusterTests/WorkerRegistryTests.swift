import ClusterWire
import Logging
import Testing
@testable import LlamaCoordinator

/// The worker registry as the pure state machine it is: control messages and the time go in,
/// the outbox and the state come out. No sockets, no threads, no clock.
@Suite("Worker registry")
struct WorkerRegistryTests {
    static let hyper = ModelHyperparameters(layerCount: 8, embeddingWidth: 64, feedForwardWidth: 128, headCount: 4,
                                            kvHeadCount: 4, vocabularySize: 100, trainingContextLength: 256,
                                            ropeFreqBase: 10000, rmsNormEpsilon: 1e-5)
    static let facts = ModelFacts(fingerprint: "f00d", layerCount: 8, hyperparameters: hyper, layerBytes: 1 << 20,
                                  layerType: 2, contextLength: 256)

    static func registry(_ workers: [ClusterManifest.Worker], heartbeat: Double = 1, securityKey: String? = nil) -> WorkerRegistry {
        var logger = Logger(label: "registry-test")
        logger.logLevel = .critical
        let manifest = ClusterManifest(model: "m.gguf", heartbeatTimeout: heartbeat, securityKey: securityKey, workers: workers)
        return WorkerRegistry(manifest: manifest, model: facts, returnEndpoint: "mem://c/return", coordinatorKey: nil,
                              logger: logger, now: 0)
    }

    static func join(_ name: String, seconds: Double = 1e-3, memory: UInt64 = 1 << 30) -> WireMessage {
        .join(Join(workerName: name, threads: 1, memoryBudgetBytes: memory, cpuFeatures: "", hasModelFile: true,
                   modelFingerprint: "f00d", dataEndpoint: "mem://\(name)/data", layerDecodeSeconds: seconds))
    }

    /// Sends `message` as `name` and returns what the registry wants sent.
    @discardableResult
    static func send(_ r: WorkerRegistry, _ name: String, _ message: WireMessage, at now: Double, key: String? = nil) -> [(String, WireMessage)] {
        _ = r.handle(identity: name, authenticatedKey: key, peerAddress: "10.0.0.9", message: message, now: now)
        defer { r.outbox.removeAll() }
        return r.outbox
    }

    static func assignments(_ out: [(String, WireMessage)]) -> [String: ShardAssignment] {
        var d: [String: ShardAssignment] = [:]
        for (n, m) in out { if case let .shardAssignment(a) = m { d[n] = a } }
        return d
    }

    /// Joins and readies every worker named; returns the epoch.
    static func bringUp(_ r: WorkerRegistry, _ names: [String], at now: Double) -> UInt32 {
        var all: [String: ShardAssignment] = [:]
        for n in names { all.merge(assignments(send(r, n, join(n), at: now))) { $1 } }
        for (n, a) in all { send(r, n, .ready(Ready(layerBegin: a.layerBegin, layerEnd: a.layerEnd, residentBytes: 0, epoch: a.epoch)), at: now) }
        return r.epoch
    }

    @Test("layers are placed once all have joined, by speed; epoch 1 starts when all are ready")
    func placement() {
        let r = Self.registry([.init(name: "a"), .init(name: "b")])
        #expect(Self.assignments(Self.send(r, "a", Self.join("a", seconds: 1e-3), at: 0)).isEmpty)
        let out = Self.assignments(Self.send(r, "b", Self.join("b", seconds: 3e-3), at: 0))
        // b is three times slower per layer: a gets 6 of the 8 layers.
        #expect(out["a"].map { $0.layerBegin..<$0.layerEnd } == 0..<6)
        #expect(out["b"].map { $0.layerBegin..<$0.layerEnd } == 6..<8)
        #expect(out["a"]?.output.address == "mem://b/data")
        #expect(out["b"]?.output.address == "mem://c/return")
        #expect(r.epoch == 1 && !r.isWhole)
        Self.send(r, "a", .ready(Ready(layerBegin: 0, layerEnd: 6, residentBytes: 0, epoch: 1)), at: 0)
        #expect(!r.isWhole)
        Self.send(r, "b", .ready(Ready(layerBegin: 6, layerEnd: 8, residentBytes: 0, epoch: 1)), at: 0)
        #expect(r.isWhole)
    }

    @Test("after a coordinator restart, workers that still hold layers tiling the model keep them: no timing, no reload")
    func heldLayersKept() {
        func join(_ name: String, held: Range<UInt32>?, seconds: Double = 0) -> WireMessage {
            .join(Join(workerName: name, threads: 1, memoryBudgetBytes: 1 << 30, cpuFeatures: "", hasModelFile: false,
                       modelFingerprint: "", dataEndpoint: "mem://\(name)/data", heldLayers: held, layerDecodeSeconds: seconds))
        }
        // Speeds would put 6 layers on a; the held 0-2 / 3-7 split is kept, and nobody is asked to time a layer.
        let r = Self.registry([.init(name: "a"), .init(name: "b"), .init(name: "s", standby: true)])
        var out = Self.send(r, "a", join("a", held: 0..<3), at: 0)
        out += Self.send(r, "s", join("s", held: nil), at: 0)
        out += Self.send(r, "b", join("b", held: 3..<8), at: 0)
        #expect(!out.contains { if case .calibrationRequest = $0.1 { true } else { false } })
        let a = Self.assignments(out)
        #expect(a["a"].map { $0.layerBegin..<$0.layerEnd } == 0..<3)
        #expect(a["b"].map { $0.layerBegin..<$0.layerEnd } == 3..<8)
        #expect(a["s"] == nil && r.record("s")?.phase == .standby)

        // Held ranges that leave a gap, or disagree with an explicit range, are not used.
        let gap = Self.registry([.init(name: "a"), .init(name: "b")])
        Self.send(gap, "a", join("a", held: 0..<3, seconds: 1e-3), at: 0)
        let g = Self.assignments(Self.send(gap, "b", join("b", held: 4..<8, seconds: 3e-3), at: 0))
        #expect(g["a"].map { $0.layerBegin..<$0.layerEnd } == 0..<6)
        let explicit = Self.registry([.init(name: "a", layers: 0..<4), .init(name: "b")])
        Self.send(explicit, "a", join("a", held: 0..<3, seconds: 1e-3), at: 0)
        let e = Self.assignments(Self.send(explicit, "b", join("b", held: 3..<8, seconds: 1e-3), at: 0))
        #expect(e["a"].map { $0.layerBegin..<$0.layerEnd } == 0..<4)
    }

    @Test("a Ready for an old epoch does not make the cluster whole")
    func staleReady() {
        let r = Self.registry([.init(name: "a"), .init(name: "b")])
        #expect(Self.bringUp(r, ["a", "b"], at: 0) == 1)
        Self.send(r, "b", Self.join("b"), at: 1)              // b restarted: epoch 2
        #expect(r.epoch == 2 && !r.isWhole)
        Self.send(r, "b", .ready(Ready(layerBegin: 4, layerEnd: 8, residentBytes: 0, epoch: 1)), at: 1)
        Self.send(r, "a", .ready(Ready(layerBegin: 0, layerEnd: 4, residentBytes: 0, epoch: 2)), at: 1)
        #expect(!r.isWhole)
        Self.send(r, "b", .ready(Ready(layerBegin: 4, layerEnd: 8, residentBytes: 0, epoch: 2)), at: 1)
        #expect(r.isWhole)
    }

    @Test("a silent worker goes missing after heartbeat_timeout; its position is uncovered since then; rejoining covers it")
    func heartbeatTimeout() {
        let r = Self.registry([.init(name: "a"), .init(name: "b")], heartbeat: 1)
        _ = Self.bringUp(r, ["a", "b"], at: 0)
        Self.send(r, "a", .heartbeat(Heartbeat(sequence: 1, unixTimeNanos: 0, tokensProcessed: 10, busySeconds: 0.1)), at: 0.9)
        r.tick(now: 0.95)
        #expect(r.isWhole && r.missingNames.isEmpty)
        r.tick(now: 1.5)                                      // b silent since 0, a heard at 0.9
        #expect(r.missingNames == ["b"])
        #expect(r.uncoveredSince[1] == 1.5)
        #expect(!r.isWhole)
        let out = Self.assignments(Self.send(r, "b", Self.join("b"), at: 2))
        #expect(r.uncoveredSince.isEmpty)
        #expect(Set(out.keys) == ["a", "b"], "a new epoch rewires every holder")
    }

    @Test("a standby takes a missing worker's layers at once; the returning worker becomes the standby")
    func standby() {
        let r = Self.registry([.init(name: "a"), .init(name: "b"), .init(name: "s", standby: true)], heartbeat: 1)
        _ = Self.bringUp(r, ["a", "b"], at: 0)
        #expect(Self.assignments(Self.send(r, "s", Self.join("s"), at: 0)).isEmpty)
        #expect(r.record("s")?.phase == .standby)
        Self.send(r, "a", .heartbeat(Heartbeat(sequence: 1, unixTimeNanos: 0, tokensProcessed: 0, busySeconds: 0)), at: 1.2)
        Self.send(r, "s", .heartbeat(Heartbeat(sequence: 1, unixTimeNanos: 0, tokensProcessed: 0, busySeconds: 0)), at: 1.2)
        r.tick(now: 1.5)
        let out = Self.assignments(r.outbox)
        r.outbox.removeAll()
        #expect(out["s"].map { $0.layerBegin..<$0.layerEnd } == 4..<8, "s runs b's layers")
        #expect(out["a"]?.output.address == "mem://s/data", "a now sends to s")
        #expect(r.holders == ["a", "s"] && r.uncoveredSince.isEmpty)
        Self.send(r, "b", Self.join("b"), at: 2)
        #expect(r.record("b")?.phase == .standby)
    }

    @Test("a graceful leave hands the layers to the standby before the leaver is released")
    func gracefulLeave() {
        let r = Self.registry([.init(name: "a"), .init(name: "b"), .init(name: "s", standby: true)])
        _ = Self.bringUp(r, ["a", "b"], at: 0)
        Self.send(r, "s", Self.join("s"), at: 0)
        let first = Self.send(r, "b", .shutdown(Shutdown(reason: "SIGTERM")), at: 0.1)
        let a = Self.assignments(first)
        #expect(a.keys.sorted() == ["s"], "only the standby loads first")
        #expect(r.isWhole, "b keeps serving while s loads")
        let rest = Self.send(r, "s", .ready(Ready(layerBegin: 4, layerEnd: 8, residentBytes: 0, epoch: a["s"]!.epoch)), at: 0.2)
        #expect(rest.contains { $0.0 == "b" && { if case .shutdown = $0.1 { true } else { false } }($0) })
        #expect(Self.assignments(rest)["a"]?.output.address == "mem://s/data")
        #expect(r.holders == ["a", "s"])
    }

    @Test("a standby loading a leaver's layers is served their weights; if it cannot load them, the leaver goes and its layers pause")
    func handoverWeightsAndFailure() {
        let r = Self.registry([.init(name: "a"), .init(name: "b"), .init(name: "s", standby: true)])
        _ = Self.bringUp(r, ["a", "b"], at: 0)
        Self.send(r, "s", Self.join("s"), at: 0)
        Self.send(r, "b", .shutdown(Shutdown(reason: "SIGTERM")), at: 0.1)
        // s streams its weights: it may fetch b's layers (before the fix it was refused every tensor).
        #expect(r.layers(of: r.record("s")!) == 4..<8)
        let outcome = r.handle(identity: "s", authenticatedKey: nil, peerAddress: nil,
                               message: .weightRequest(WeightRequest(tensorName: "blk.4.attn_q.weight")), now: 0.15)
        guard case .serveWeights(let w, _) = outcome, w.name == "s" else {
            Issue.record("the standby's weight request was not served")
            return
        }
        #expect(r.isWhole, "b serves while s loads")
        let out = Self.send(r, "s", .error(ErrorReport(code: .weights, message: "disk full")), at: 0.2)
        #expect(out.contains { $0.0 == "b" && { if case .shutdown = $0.1 { true } else { false } }($0) }, "b is released")
        #expect(r.record("s")?.phase == .failed && r.record("b")?.phase == .gone)
        #expect(!r.isWhole && r.missingNames == ["b"])
    }

    @Test("peers the manifest does not list, or with another worker's key, are refused and get nothing")
    func refusals() {
        let r = Self.registry([.init(name: "a", key: "KEY-A"), .init(name: "b", key: "KEY-B")], securityKey: "coordinator.key")
        #expect(Self.send(r, "mallory", Self.join("mallory"), at: 0, key: "KEY-M").isEmpty)
        #expect(Self.send(r, "a", Self.join("a"), at: 0, key: "KEY-B").isEmpty, "b's key cannot claim a's name")
        #expect(Self.send(r, "a", Self.join("a"), at: 0, key: nil).isEmpty)
        #expect(r.refusals.count == 3)
        #expect(r.record("a")?.join == nil)
        Self.send(r, "a", Self.join("a"), at: 0, key: "KEY-A")
        #expect(r.record("a")?.join != nil)
        // A weight request from an unknown peer is not served either.
        let outcome = r.handle(identity: "mallory", authenticatedKey: "KEY-M", peerAddress: nil,
                               message: .weightRequest(WeightRequest(tensorName: "blk.0.attn_q.weight")), now: 0)
        if case .serveWeights = outcome { Issue.record("served weights to an unknown peer") }
    }

    @Test("a worker from another model or protocol is told why and not placed")
    func mismatches() {
        let r = Self.registry([.init(name: "a")])
        var j = Join(workerName: "a", threads: 1, memoryBudgetBytes: 1 << 30, cpuFeatures: "", hasModelFile: true,
                     modelFingerprint: "beef", dataEndpoint: "mem://a/data")
        let out = Self.send(r, "a", .join(j), at: 0)
        guard case let .error(e)? = out.first?.1 else { Issue.record("no error: \(out)"); return }
        #expect(e.code == .modelMismatch)
        j.modelFingerprint = "f00d"
        j.protocolVersion = 999
        guard case let .error(e2)? = Self.send(r, "a", .join(j), at: 0).first?.1 else { Issue.record("no error"); return }
        #expect(e2.code == .protocolVersion)
        #expect(r.epoch == 0)
    }

    @Test("a lost frame starts a new epoch that rewires every live holder")
    func frameLoss() {
        let r = Self.registry([.init(name: "a"), .init(name: "b")])
        _ = Self.bringUp(r, ["a", "b"], at: 0)
        r.frameLost(reason: "frame overdue")
        #expect(r.epoch == 2 && !r.isWhole)
        #expect(Set(Self.assignments(r.outbox).values.map(\.epoch)) == [2])
    }

    @Test("a fast stage's rate is measured over at least 10 ms of work, not per heartbeat")
    func rateOverSmallHeartbeats() {
        let r = Self.registry([.init(name: "a"), .init(name: "b")])
        _ = Self.bringUp(r, ["a", "b"], at: 0)
        // 40 tokens per 4 ms of work between heartbeats: no single interval reaches 10 ms.
        for i in 1...4 {
            Self.send(r, "a", .heartbeat(Heartbeat(sequence: UInt64(i), unixTimeNanos: 0, tokensProcessed: UInt64(40 * i),
                                                   busySeconds: 0.004 * Double(i))), at: 0.1 * Double(i))
        }
        #expect(abs((r.record("a")?.rate ?? 0) - 10_000) < 1, "\(r.record("a")?.rate ?? 0)")
        // A restarted worker counts from zero again.
        Self.send(r, "a", .heartbeat(Heartbeat(sequence: 5, unixTimeNanos: 0, tokensProcessed: 20, busySeconds: 0.02)), at: 0.5)
        #expect(abs((r.record("a")?.rate ?? 0) - 1_000) < 1)
    }

    @Test("with security a worker's routing id is name@tag; replies go to the connection that proved the key")
    func secureRoutingIDs() {
        let r = Self.registry([.init(name: "a", key: "KA"), .init(name: "b", key: "KB")], securityKey: "coord.key")
        let toA = Self.assignments(Self.send(r, "a@1111", Self.join("a"), at: 0, key: "KA"))
        #expect(toA.isEmpty)
        let out = Self.send(r, "b@2222", Self.join("b"), at: 0, key: "KB")
        #expect(Set(Self.assignments(out).keys) == ["a@1111", "b@2222"])
        // a's key under b's name, from another connection: refused, and nothing goes to it.
        let thief = Self.send(r, "b@9999", Self.join("b"), at: 0.1, key: "KA")
        #expect(thief.isEmpty && r.refusals.count == 1)
        #expect(r.record("b")?.routingID == "b@2222")
        // Heartbeats come on name@tag#hb and are answered there.
        let hb = Self.send(r, "b@2222#hb", .heartbeat(Heartbeat(sequence: 1, unixTimeNanos: 0, tokensProcessed: 0, busySeconds: 0)),
                           at: 0.2, key: "KB")
        #expect(hb.map(\.0) == ["b@2222#hb"])
    }

    @Test("with security, garbage routing ids are refused and change nothing", arguments: [
        "", "@", "@KA", "#hb", "@#hb", "a", "a#hb", "a@", "zz@1111", "a\u{0}@1", String(repeating: "a", count: 300),
    ])
    func garbageRoutingIDs(_ identity: String) {
        let r = Self.registry([.init(name: "a", key: "KA"), .init(name: "b", key: "KB")], securityKey: "coord.key")
        _ = Self.bringUp(r, [], at: 0)
        Self.send(r, "a@1111", Self.join("a"), at: 0, key: "KA")
        let routing = r.record("a")?.routingID
        // Every message kind from a peer without the key of the name its routing id claims.
        for message in [Self.join("a"), .heartbeat(Heartbeat(sequence: 1, unixTimeNanos: 0, tokensProcessed: 9, busySeconds: 1)),
                        .ready(Ready(layerBegin: 0, layerEnd: 4, residentBytes: 0, epoch: 1))] {
            let out = Self.send(r, identity, message, at: 0.1, key: "KB")
            #expect(out.isEmpty, "\(identity.debugDescription): \(out.map(\.0))")
        }
        #expect(r.record("a")?.routingID == routing)
        #expect(r.record("a")?.tokensProcessed == 0)
        #expect(r.refusals.count == 3)
    }
}
