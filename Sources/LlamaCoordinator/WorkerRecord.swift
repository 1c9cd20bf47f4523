import ClusterWire
import LlamaInference

/// What the coordinator knows of one manifest entry (a worker or a standby).
final class WorkerRecord {
    enum Phase: String {
        /// Not joined since the coordinator started.
        case waiting
        /// Given layers; their Ready for the current epoch has not come.
        case loading
        case ready
        /// Silent for longer than the heartbeat timeout.
        case missing
        /// Joined without layers, waiting to take over a missing worker's.
        case standby
        /// Reported that it cannot load its layers.
        case failed
        /// Asked to leave; serves until a standby has its layers.
        case leaving
        /// Left (it was released with Shutdown).
        case gone
    }

    let name: String
    /// Index among the manifest's stages (nil for a standby entry).
    let home: Int?
    let key: String?
    var phase = Phase.waiting
    var join: Join?
    /// The pipeline position it runs now.
    var position: Int?
    var lastSeen = 0.0
    var readyEpoch: UInt32 = 0
    var residentBytes: UInt64 = 0
    var tokensProcessed: UInt64 = 0
    var busySeconds = 0.0
    var rate = 0.0
    /// Tokens and busy seconds when `rate` was last computed.
    var rateBase: (tokens: UInt64, busySeconds: Double) = (0, 0)
    var lastFailure: String?
    var calibrationAsked = false
    var calibrationAskedAt = 0.0
    /// It could not time a layer: placement uses its memory instead.
    var calibrationFailed = false
    var speed: StageSpeed?
    var peerAddress: String?
    /// The routing id of its control connection (the name, or `name@tag` with security),
    /// from its last message that passed the key check.
    var routingID: String

    init(name: String, home: Int?, key: String?) {
        self.name = name
        routingID = name
        self.home = home
        self.key = key
    }

    /// Joined and answering.
    var isLive: Bool { join != nil && phase != .missing && phase != .waiting && phase != .gone }
    /// An idle standby that could take a position now.
    var canTakeOver: Bool { phase == .standby && position == nil }

    func status(layers: Range<Int>?, now: Double) -> WorkerStatus {
        WorkerStatus(name: name, state: phase == .failed ? "failed: \(lastFailure ?? "")" : phase.rawValue,
                     layers: layers.map { "\($0.lowerBound)-\($0.upperBound - 1)" }, threads: join.map { Int($0.threads) },
                     address: join?.dataEndpoint, tokensProcessed: Int(tokensProcessed), tokensPerSecond: rate,
                     secondsSinceHeartbeat: join == nil ? nil : now - lastSeen, standby: home == nil)
    }
}

/// The model facts the registry hands to workers.
struct ModelFacts {
    var fingerprint: String
    var layerCount: Int
    var hyperparameters: ModelHyperparameters
    /// Bytes of one layer's matrices (for memory limits in placement).
    var layerBytes: Int
    /// GGML type of the layer matrices (for calibration).
    var layerType: UInt32
    var contextLength: Int
}
