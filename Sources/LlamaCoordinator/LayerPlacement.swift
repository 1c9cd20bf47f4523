import Foundation

/// How fast a worker runs one layer: measured at join (seconds for one decoded token).
public struct StageSpeed: Sendable, Equatable {
    public var secondsPerLayer: Double
    public init(secondsPerLayer: Double) { self.secondsPerLayer = secondsPerLayer }
}

/// Splitting layers between stages so that every stage takes about the same time.
public enum LayerPlacement {
    /// Layer counts (each at least 1, at most `capacity[i]`, summing to `layers`) that
    /// minimise the slowest stage's time `costs[i] * count[i]`; nil when memory cannot hold
    /// them. Exact: a dynamic programme over prefixes (layers * stages^2 is small).
    public static func balance(layers: Int, costs: [Double], capacity: [Int]) -> [Int]? {
        let k = costs.count
        guard k > 0, layers >= k else { return nil }
        // best[s][n]: the least possible slowest-stage time placing the first n layers on
        // stages 0..<s; choice[s][n]: the count of stage s-1 achieving it.
        var best = [[Double]](repeating: [Double](repeating: .infinity, count: layers + 1), count: k + 1)
        var choice = [[Int]](repeating: [Int](repeating: 0, count: layers + 1), count: k + 1)
        best[0][0] = 0
        for s in 1...k {
            for n in s...layers {
                let most = min(capacity[s - 1], n - (s - 1))
                guard most >= 1 else { continue }
                for c in 1...most where best[s - 1][n - c] < .infinity {
                    let t = max(best[s - 1][n - c], costs[s - 1] * Double(c))
                    // Ties: the earlier stage takes more (stable, like the memory split).
                    if t < best[s][n] - 1e-12 {
                        best[s][n] = t
                        choice[s][n] = c
                    }
                }
            }
        }
        guard best[k][layers] < .infinity else { return nil }
        var counts = [Int](repeating: 0, count: k)
        var n = layers
        for s in stride(from: k, through: 1, by: -1) {
            counts[s - 1] = choice[s][n]
            n -= choice[s][n]
        }
        return counts
    }
}

extension ClusterManifest {
    /// Assigns every worker its layers for a model of `layerCount` layers: explicit ranges are
    /// kept, and each run of workers without one shares the layers between its neighbours in
    /// proportion to `memory` (bytes each reported; equal shares when unknown).
    public func assignLayers(layerCount: Int, memory: [String: Int] = [:], speed: [String: StageSpeed] = [:],
                             layerBytes: Int = 0) throws -> [String: Range<Int>] {
        let workers = stages
        var result: [String: Range<Int>] = [:]
        var cursor = 0
        var i = 0
        while i < workers.count {
            if let r = workers[i].layers {
                guard r.lowerBound == cursor else {
                    throw ManifestError(field: "workers[\(i)].layers",
                                        reason: cursor < r.lowerBound ? "layers \(cursor)-\(r.lowerBound - 1) are assigned to no worker" : "overlaps the previous worker's layers")
                }
                guard r.upperBound <= layerCount else {
                    throw ManifestError(field: "workers[\(i)].layers", reason: "the model has only \(layerCount) layers (0-\(layerCount - 1))")
                }
                result[workers[i].name] = r
                cursor = r.upperBound
                i += 1
                continue
            }
            // A run of workers without ranges, up to the next explicit range (or the end).
            var j = i
            while j < workers.count && workers[j].layers == nil { j += 1 }
            let end = j < workers.count ? workers[j].layers!.lowerBound : layerCount
            let run = Array(workers[i..<j])
            let available = end - cursor
            guard available >= run.count else {
                throw ManifestError(field: "workers[\(i)]", reason: "\(run.count) workers share only \(max(available, 0)) layers")
            }
            // Measured speeds for every worker of the run: equal stage times within memory.
            if run.allSatisfy({ speed[$0.name] != nil }) {
                let costs = run.map { speed[$0.name]!.secondsPerLayer }
                let capacity = run.map { w -> Int in
                    guard layerBytes > 0, let m = memory[w.name] else { return available }
                    return max(0, m / layerBytes)
                }
                guard let counts = LayerPlacement.balance(layers: available, costs: costs, capacity: capacity) else {
                    throw ManifestError(field: "workers[\(i)]", reason: "the memory \(run.map(\.name).joined(separator: ", ")) offer cannot hold layers \(cursor)-\(end - 1) (\(layerBytes / 1_048_576) MiB each)")
                }
                var at = cursor
                for (k, w) in run.enumerated() {
                    result[w.name] = at..<(at + counts[k])
                    at += counts[k]
                }
                cursor = end
                i = j
                continue
            }
            let weights = run.map { Double(max(memory[$0.name] ?? 1, 1)) }
            let total = weights.reduce(0, +)
            var assigned = 0
            var acc = 0.0
            for (k, w) in run.enumerated() {
                acc += weights[k]
                var upto = k == run.count - 1 ? available : Int((acc / total * Double(available)).rounded())
                upto = max(upto, assigned + 1)                          // at least one layer each
                upto = min(upto, available - (run.count - 1 - k))       // leave one for each that follows
                result[w.name] = (cursor + assigned)..<(cursor + upto)
                assigned = upto
            }
            cursor = end
            i = j
        }
        guard cursor == layerCount else {
            throw ManifestError(field: "workers", reason: "layers \(cursor)-\(layerCount - 1) are assigned to no worker")
        }
        return result
    }
}


