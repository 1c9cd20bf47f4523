import CoreMetrics
import Synchronization

/// What the coordinator counts about its workers and recoveries (swift-metrics; `/metrics`).
/// The loop thread records everything but refusals, which the ZAP handler's thread records.
final class ClusterMetrics: @unchecked Sendable {
    // @unchecked: `perWorker`, `recoveryCount` and `gaveUpCount` are touched only by the
    // coordinator's loop thread; refusals go through an Atomic; swift-metrics handles are thread-safe.
    private let factory: MetricsFactory
    let recoveries: Counter
    let gaveUp: Counter
    let refusedPeers: Counter
    let recoverySeconds: Timer
    /// Weight bytes sent to workers without a model file (none after a restart when their
    /// layers are still loaded or cached).
    let weightBytesServed: Counter
    private var perWorker: [String: (up: Gauge, tokens: Counter, rate: Gauge, stage: Timer)] = [:]
    private(set) var recoveryCount = 0
    private(set) var gaveUpCount = 0
    private let refusals = Atomic<Int>(0)
    var refusedCount: Int { refusals.load(ordering: .relaxed) }

    init(factory: MetricsFactory) {
        self.factory = factory
        recoveries = Counter(label: "llamacluster_recoveries_total", factory: factory)
        gaveUp = Counter(label: "llamacluster_requests_gave_up_total", factory: factory)
        refusedPeers = Counter(label: "llamacluster_refused_peers_total", factory: factory)
        recoverySeconds = Timer(label: "llamacluster_recovery_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
        weightBytesServed = Counter(label: "llamacluster_weight_bytes_served_total", factory: factory)
    }

    func recovered(after seconds: Double) {
        recoveryCount += 1
        recoveries.increment()
        recoverySeconds.recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    func requestsGaveUp(_ n: Int) {
        gaveUpCount += n
        gaveUp.increment(by: n)
    }

    func refused() {
        refusals.add(1, ordering: .relaxed)
        refusedPeers.increment()
    }

    /// A heartbeat's news: `tokens` more processed, `busy` more busy seconds.
    func worker(_ name: String, up: Bool, addedTokens tokens: Int, addedBusySeconds busy: Double, rate: Double) {
        let m = perWorker[name] ?? {
            let d = [("worker", name)]
            let made = (Gauge(label: "llamacluster_worker_up", dimensions: d, factory: factory),
                        Counter(label: "llamacluster_worker_tokens_total", dimensions: d, factory: factory),
                        Gauge(label: "llamacluster_worker_tokens_per_second", dimensions: d, factory: factory),
                        Timer(label: "llamacluster_worker_stage_seconds_per_token", dimensions: d, preferredDisplayUnit: .seconds,
                              factory: factory))
            perWorker[name] = made
            return made
        }()
        m.up.record(up ? 1 : 0)
        m.rate.record(rate)
        if tokens > 0 {
            m.tokens.increment(by: tokens)
            if busy > 0 { m.stage.recordNanoseconds(Int64(busy / Double(tokens) * 1e9)) }
        }
    }
}
