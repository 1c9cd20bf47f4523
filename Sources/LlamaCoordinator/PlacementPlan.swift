import Foundation

/// What `llama-coord plan` shows before anything starts: the layers each worker would get and
/// how long its stage would take per decoded token, from given or measured seconds per layer.
public struct PlacementPlan: Sendable {
    public struct Stage: Sendable, Equatable {
        public var name: String
        public var layers: Range<Int>
        /// Seconds one of its layers takes for one decoded token (nil: unknown).
        public var secondsPerLayer: Double?
        /// Weight bytes of its layers.
        public var weightBytes: Int
        public var stageSeconds: Double? { secondsPerLayer.map { $0 * Double(layers.count) } }
    }

    public var stages: [Stage]
    public var standbys: [String]
    /// One-way latency of each hop (coordinator -> first stage -> ... -> coordinator).
    public var hopSeconds: Double

    /// A single stream's bound: every stage in turn plus every hop (the coordinator's own
    /// embedding, head and sampling are not counted).
    public var singleStreamTokensPerSecond: Double? {
        let times = stages.compactMap(\.stageSeconds)
        guard times.count == stages.count, !times.isEmpty else { return nil }
        return 1 / (times.reduce(0, +) + Double(stages.count + 1) * hopSeconds)
    }

    /// Many streams at once, frames in flight on every stage: the slowest stage sets the pace.
    public var pipelineTokensPerSecond: Double? {
        let times = stages.compactMap(\.stageSeconds)
        guard times.count == stages.count, let slowest = times.max(), slowest > 0 else { return nil }
        return 1 / slowest
    }
}

extension ClusterManifest {
    /// The placement the coordinator would choose for a model of `layerCount` layers of
    /// `layerBytes` each, given each worker's seconds per layer and memory (bytes).
    public func plan(layerCount: Int, layerBytes: Int, speed: [String: StageSpeed], memory: [String: Int],
                     hopSeconds: Double) throws -> PlacementPlan {
        let ranges = try assignLayers(layerCount: layerCount, memory: memory, speed: speed, layerBytes: layerBytes)
        let stageList = stages.map { w in
            PlacementPlan.Stage(name: w.name, layers: ranges[w.name]!, secondsPerLayer: speed[w.name]?.secondsPerLayer,
                                weightBytes: ranges[w.name]!.count * layerBytes)
        }
        return PlacementPlan(stages: stageList, standbys: workers.filter(\.standby).map(\.name), hopSeconds: hopSeconds)
    }
}
