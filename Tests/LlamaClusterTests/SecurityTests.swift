import ClusterTransport
import Foundation
import LlamaCoordinator
import LlamaInference
import TestSupport
import Testing

/// CURVE with ZAP on loopback: listed keys join and serve; a peer with an unlisted key, or with
/// another worker's key under a name, gets nothing (no assignment, no weights) and the real
/// worker keeps serving.
@Suite("CURVE between nodes", .serialized, .timeLimit(.minutes(3)), .enabled(if: CurveKeyPair.isAvailable, "libzmq without CURVE"))
struct SecurityTests {
    static let prompt: [Int32] = [1, 5132, 338]

    static func cachedLayerFiles(_ cluster: TestCluster) -> [String] {
        ((try? FileManager.default.subpathsOfDirectory(atPath: cluster.cacheDirectory)) ?? []).filter { $0.hasSuffix(".gguf") && !$0.hasPrefix("calibration") }
    }

    @Test("workers with the listed keys join and give one process's tokens; impostors under a live name get nothing")
    func curveCluster() async throws {
        let cluster = try TestCluster(workers: ["w1", "w2"], overTCP: true, secure: true)
        defer { cluster.stop() }
        try cluster.startWorker("w1")
        try cluster.startWorker("w2")
        try cluster.waitReady()
        let expected = try await singleProcessTokens(Self.prompt, maxTokens: 16)
        #expect(try await cluster.complete(Self.prompt, maxTokens: 16) == expected)
        #expect(cluster.coordinator.health().insecure == false)

        // An unlisted key claiming w2, with no model file (it would ask for w2's weights).
        try cluster.startWorker("w2", model: nil, label: "rogue", keys: try CurveKeyPair.generate())
        // w1's own key claiming w2's name: the handshake passes, the name check does not.
        try cluster.startWorker("w2", model: nil, label: "thief", keys: cluster.workerKeys["w1"]!)
        try await Task.sleep(nanoseconds: 2_500_000_000)       // several join attempts and heartbeats each
        #expect(Self.cachedLayerFiles(cluster).isEmpty, "no weight bytes reached an impostor")
        #expect(cluster.coordinator.health().ready)
        #expect(cluster.coordinator.health().missing.isEmpty)
        #expect(try await cluster.complete(Self.prompt, maxTokens: 16) == expected, "the real w2 still serves")
        cluster.kill("rogue")
        cluster.kill("thief")
    }

    @Test("a worker that knows no key cannot join a secure coordinator")
    func plainWorkerRefused() async throws {
        let cluster = try TestCluster(workers: ["w1"], overTCP: true, secure: true)
        defer { cluster.stop() }
        // No keys at all: the worker speaks the NULL mechanism, which the CURVE server drops.
        try cluster.startWorker("w1", model: nil, plain: true)
        try await Task.sleep(nanoseconds: 2_000_000_000)
        #expect(cluster.coordinator.health().ready == false)
        #expect(Self.cachedLayerFiles(cluster).isEmpty)
        cluster.kill("w1")
    }
}
