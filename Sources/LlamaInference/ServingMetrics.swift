import CoreMetrics

/// What the scheduler counts: the ``BackendCounters`` that `/status` shows, and the same
/// events (plus latency histograms) through swift-metrics for `/metrics`.
///
/// Touched only by the serving thread; ``ServingFrontend`` publishes copies of ``counters``.
public final class ServingMetrics {
    public private(set) var counters = BackendCounters()
    private var recentTokens: [(time: Double, count: Int)] = []
    private var tokensThisTick = 0

    private let requests, failed, promptTokens, cachedPromptTokens, generatedTokens: Counter
    private let replayedTokens, drafted, accepted: Counter
    private let active, queued, tokensPerSecond: Gauge
    private let timeToFirstToken, timePerOutputToken, queueWait, replaySeconds: Timer

    public init(factory: MetricsFactory = MetricsSystem.factory) {
        func counter(_ name: String) -> Counter { Counter(label: "llamacluster_" + name, factory: factory) }
        func gauge(_ name: String) -> Gauge { Gauge(label: "llamacluster_" + name, factory: factory) }
        func timer(_ name: String) -> Timer {
            Timer(label: "llamacluster_" + name, dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
        }
        requests = counter("requests_total")
        failed = counter("requests_failed_total")
        promptTokens = counter("prompt_tokens_total")
        cachedPromptTokens = counter("prompt_tokens_cached_total")
        generatedTokens = counter("generated_tokens_total")
        replayedTokens = counter("replayed_tokens_total")
        drafted = counter("draft_tokens_total")
        accepted = counter("draft_tokens_accepted_total")
        active = gauge("requests_active")
        queued = gauge("queue_length")
        tokensPerSecond = gauge("tokens_per_second")
        timeToFirstToken = timer("time_to_first_token_seconds")
        timePerOutputToken = timer("time_per_output_token_seconds")
        queueWait = timer("queue_wait_seconds")
        replaySeconds = timer("replay_seconds")
    }

    func requestReceived(promptTokens n: Int) {
        counters.requestsTotal += 1
        requests.increment()
    }

    func requestAdmitted(_ r: RequestRecord, reusedPromptTokens reused: Int, now: Double) {
        counters.promptTokensTotal += r.promptCount
        counters.promptTokensCached += reused
        promptTokens.increment(by: r.promptCount)
        cachedPromptTokens.increment(by: reused)
        queueWait.record(seconds: now - r.submittedAt)
    }

    func frameSent(tokens: Int, replayed: Int) {
        guard replayed > 0 else { return }
        counters.replayedTokens += replayed
        replayedTokens.increment(by: replayed)
    }

    /// A replay after a loss is done: every paused sequence's cache is rebuilt.
    func replayFinished(seconds: Double) { replaySeconds.record(seconds: seconds) }

    func tokenGenerated() {
        counters.generatedTokensTotal += 1
        tokensThisTick += 1
        generatedTokens.increment()
    }

    func draftChecked(drafted d: Int, accepted a: Int) {
        counters.draftedTokens += d
        counters.acceptedDraftTokens += a
        drafted.increment(by: d)
        accepted.increment(by: a)
    }

    func requestEnded(_ r: RequestRecord, now: Double, failed didFail: Bool) {
        if didFail {
            counters.requestsFailed += 1
            failed.increment()
        }
        if let first = r.firstTokenAt {
            timeToFirstToken.record(seconds: first - r.submittedAt)
            let generated = r.choices.map(\.generation.generated).max() ?? 0
            if let last = r.lastTokenAt, generated > 1 {
                timePerOutputToken.record(seconds: (last - first) / Double(generated - 1))
            }
        }
    }

    /// Updates the gauges; called once per loop turn.
    func tick(now: Double, active a: Int, queued q: Int) {
        counters.requestsActive = a
        counters.queueLength = q
        active.record(a)
        queued.record(q)
        if tokensThisTick > 0 || !recentTokens.isEmpty {
            recentTokens.append((now, tokensThisTick))
            tokensThisTick = 0
            recentTokens.removeAll { now - $0.time > 5 }
            let span = max(min(5, now - (recentTokens.first?.time ?? now)), 0.5)
            counters.tokensPerSecond = Double(recentTokens.reduce(0) { $0 + $1.count }) / span
            tokensPerSecond.record(counters.tokensPerSecond)
        }
    }

    /// A lost worker's layers were taken over and the sequences replayed.
    public func recovered() { counters.recoveries += 1 }
}

extension Timer {
    func record(seconds: Double) {
        guard seconds.isFinite, seconds >= 0 else { return }
        recordNanoseconds(Int64(seconds * 1e9))
    }
}
