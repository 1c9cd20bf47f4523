import LlamaCoordinator
import TestSupport
import Testing

/// The placement preview: the split equal-time placement gives, checked against a brute-force
/// search over every split, and the speeds it predicts from it.
@Suite("Placement plan")
struct PlacementPlanTests {
    /// The least possible slowest-stage time over every split of `layers` into `costs.count`
    /// contiguous non-empty runs within `capacity`.
    static func bruteForce(layers: Int, costs: [Double], capacity: [Int]) -> Double {
        func best(_ s: Int, _ left: Int) -> Double {
            if s == costs.count { return left == 0 ? 0 : .infinity }
            var out = Double.infinity
            let most = min(capacity[s], left - (costs.count - 1 - s))
            guard most >= 1 else { return .infinity }
            for c in 1...most { out = min(out, max(costs[s] * Double(c), best(s + 1, left - c))) }
            return out
        }
        return best(0, layers)
    }

    @Test("balance finds the brute-force optimum on random stage costs and memory", arguments: 0..<40)
    func balanceIsOptimal(_ seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed) &+ 17)
        let stages = 2 + Int(rng.next() % 3)
        let layers = stages + Int(rng.next() % 14)
        let costs = (0..<stages).map { _ in 0.5 + Double(rng.next() % 1000) / 250 }
        let capacity = (0..<stages).map { _ in rng.next() % 4 == 0 ? 1 + Int(rng.next() % UInt64(layers)) : layers }
        let counts = LayerPlacement.balance(layers: layers, costs: costs, capacity: capacity)
        let optimum = Self.bruteForce(layers: layers, costs: costs, capacity: capacity)
        guard let counts else {
            #expect(optimum == .infinity, "balance found no split, brute force did: \(costs) \(capacity)")
            return
        }
        #expect(counts.reduce(0, +) == layers && counts.allSatisfy { $0 >= 1 })
        #expect(zip(counts, capacity).allSatisfy { $0 <= $1 })
        let slowest = zip(counts, costs).map { Double($0) * $1 }.max()!
        #expect(abs(slowest - optimum) < 1e-9, "\(counts) on \(costs): \(slowest) vs \(optimum)")
    }

    @Test("the plan keeps explicit ranges, balances the rest by speed and predicts tokens/s")
    func plan() throws {
        let m = try ClusterManifest.parse(yaml: """
            model: m.gguf
            workers:
              - { name: a, layers: "0-3" }
              - { name: b }
              - { name: c }
              - { name: s, standby: true }
            """)
        let ms = 1e-3
        let plan = try m.plan(layerCount: 16, layerBytes: 1 << 20,
                              speed: ["a": .init(secondsPerLayer: 1 * ms), "b": .init(secondsPerLayer: 1 * ms), "c": .init(secondsPerLayer: 2 * ms)],
                              memory: [:], hopSeconds: 0.5 * ms)
        #expect(plan.stages.map(\.name) == ["a", "b", "c"])
        #expect(plan.stages.map(\.layers) == [0..<4, 4..<12, 12..<16], "b is twice as fast as c: 8 and 4 layers")
        #expect(plan.standbys == ["s"])
        #expect(plan.stages[1].weightBytes == 8 << 20)
        // Stages 4 + 8 + 8 ms, four hops of 0.5 ms: 22 ms per token for one stream.
        #expect(abs(plan.singleStreamTokensPerSecond! - 1 / 0.022) < 1e-6)
        #expect(abs(plan.pipelineTokensPerSecond! - 1 / 0.008) < 1e-6)
        // Memory caps a stage: b holds only 5 layers.
        let capped = try m.plan(layerCount: 16, layerBytes: 1 << 20,
                                speed: ["a": .init(secondsPerLayer: ms), "b": .init(secondsPerLayer: ms), "c": .init(secondsPerLayer: 2 * ms)],
                                memory: ["b": 5 << 20, "c": 64 << 20], hopSeconds: 0)
        #expect(capped.stages.map(\.layers) == [0..<4, 4..<9, 9..<16])
    }
}
