import ClusterTransport
import ClusterWire
import Foundation
import LlamaInference
import LlamaModel
import Logging

/// The coordinator's thread: it owns the transport and wires the parts together. Each turn it
/// takes what arrived (control messages to the registry, returning frames to the pipeline and
/// the scheduler), takes new requests, applies the registry's decisions (messages, epochs,
/// pauses), sends the frames the scheduler has ready, and publishes the status.
final class CoordinatorLoop {
    let transport: any CoordinatorTransport
    let registry: WorkerRegistry
    let core: ServingCore
    let pipeline: ClusterPipeline
    let weights: WeightServer
    let frontend: ServingFrontend
    let metrics: ClusterMetrics
    let manifest: ClusterManifest
    let logger: Logger
    let insecure: Bool
    private(set) var peakFramesInFlight = 0
    private var wasWhole = false
    private var everWhole = false
    private var lostAt: Double?
    private var lossWasWorker = false
    private var gaveUp = false
    private var lastTick = 0.0
    var draining = false
    static let stepMask: UInt64 = 0xFF_FFFF_FFFF

    init(transport: any CoordinatorTransport, registry: WorkerRegistry, core: ServingCore, pipeline: ClusterPipeline,
         weights: WeightServer, frontend: ServingFrontend, metrics: ClusterMetrics, manifest: ClusterManifest,
         logger: Logger) {
        self.transport = transport
        self.registry = registry
        self.core = core
        self.pipeline = pipeline
        self.weights = weights
        self.frontend = frontend
        self.metrics = metrics
        self.manifest = manifest
        self.logger = logger
        insecure = manifest.runsInsecurely
        core.frameTimeoutBase = manifest.frameTimeout
        core.frameTimeoutPerToken = 0.05 * Double(manifest.stages.count)
    }

    /// One turn of the loop, waiting up to `timeout` for traffic.
    func turn(timeout: Double) {
        do {
            try transport.poll(timeout: timeout) { event in
                let now = monotonicNow()
                switch event {
                case .control(let m): control(m, now: now)
                case .data(let bytes): returned(bytes, now: now)
                }
            }
        } catch {
            logger.error("transport: \(error)")
            usleep(10_000)
        }
        let now = monotonicNow()
        core.takeInbox(from: frontend, now: now)
        if now - lastTick > 0.1 {
            lastTick = now
            registry.tick(now: now)
            if let predicted = registry.predictedSeconds(tokens: 1) { core.frameTimeoutPerToken = 4 * predicted }
        }
        applyRegistry()
        if registry.isWhole, core.hasOverdueFrame(now: now) {
            logger.error("a frame did not come back in time (see the workers' logs): every stage starts a new epoch")
            registry.frameLost(reason: "a frame was lost in the pipeline")
            applyRegistry()
        }
        updateReadiness(now: now)
        sendFrames(now: now)
        publish(now: now)
    }

    // MARK: - Inbound

    private func control(_ m: ControlMessage, now: Double) {
        let identity = String(decoding: m.identity, as: UTF8.self)
        let message: WireMessage
        do {
            message = try WireMessage.decode(m.payload)
        } catch {
            logger.error("rejected a control frame from \(identity.debugDescription) at \(m.peerAddress ?? "?"): \(error)")
            return
        }
        if case let .serveWeights(w, req) = registry.handle(identity: identity, authenticatedKey: m.authenticatedKey,
                                                            peerAddress: m.peerAddress, message: message, now: now) {
            let reply = weights.reply(to: req, workerName: w.name, layers: registry.layers(of: w))
            if case .tensorChunk(let chunk) = reply { metrics.weightBytesServed.increment(by: chunk.data.count) }
            send(reply, to: w.routingID)
        }
    }

    private func returned(_ bytes: UnsafeRawBufferPointer, now: Double) {
        let vocab = pipeline.config.vocabSize
        do {
            let result = try pipeline.decode(bytes) { stepID in
                guard UInt32(truncatingIfNeeded: stepID >> 40) == registry.epoch else { return nil }
                return core.logitsRowCount(ofFrame: stepID & Self.stepMask)
            }
            guard case let .frame(stepID, rows)? = result else { return }
            pipeline.logits.withUnsafeBufferPointer {
                core.complete(stepID & Self.stepMask, logits: UnsafeBufferPointer(rebasing: $0[0..<(rows * vocab)]), now: now)
            }
        } catch {
            logger.error("rejected a returning frame: \(error)")
        }
    }

    // MARK: - Decisions

    private func send(_ message: WireMessage, to identity: String) {
        do {
            try transport.sendControl(message.encode(), to: Array(identity.utf8))
        } catch {
            logger.warning("cannot send \(message.kind) to \(identity): \(error)")
        }
    }

    private func applyRegistry() {
        if !registry.epochChanges.isEmpty {
            let reasons = registry.epochChanges.joined(separator: "; ")
            registry.epochChanges.removeAll()
            logger.info("epoch \(registry.epoch): \(reasons)")
            // Who may connect first, then the assignments that make them connect.
            transport.allowDataPeers(registry.returnPeerKeys)
            do {
                try transport.connectFirstStage(registry.firstStage)
            } catch {
                logger.error("cannot connect to the first stage: \(error)")
            }
            core.restartPipeline(reason: reasons)
        }
        for (identity, message) in registry.outbox { send(message, to: identity) }
        registry.outbox.removeAll()
        for _ in registry.refusals { metrics.refused() }
        registry.refusals.removeAll()
        for news in registry.heartbeatNews {
            let w = registry.record(news.name)
            metrics.worker(news.name, up: w?.phase == .ready, addedTokens: news.tokens, addedBusySeconds: news.busy, rate: w?.rate ?? 0)
        }
        registry.heartbeatNews.removeAll()
    }

    private func updateReadiness(now: Double) {
        let whole = registry.isWhole
        if whole && !wasWhole {
            if let lost = lostAt, lossWasWorker {
                metrics.recovered(after: now - lost)
                logger.info("the cluster is whole again after \(String(format: "%.3f", now - lost)) s: replaying \(core.activeRequests) requests")
            } else {
                logger.info("cluster ready (epoch \(registry.epoch))")
            }
            lostAt = nil
            lossWasWorker = false
            gaveUp = false
            everWhole = true
        }
        if !whole && wasWhole {
            lostAt = now
            lossWasWorker = !registry.uncoveredSince.isEmpty
            if core.activeRequests > 0 {
                logger.warning("paused \(core.activeRequests) requests (\(core.activeRequestList)): \(registry.missingNames.isEmpty ? "a new epoch is starting" : registry.missingNames.joined(separator: ", ") + " missing")")
            }
        }
        if !registry.uncoveredSince.isEmpty { lossWasWorker = true }
        if !registry.losses.isEmpty {
            // A standby that took the layers at once leaves nothing uncovered: still a recovery.
            if !whole { lossWasWorker = true }
            registry.losses.removeAll()
        }
        wasWhole = whole
        core.paused = !whole
        if !whole, !gaveUp, let since = registry.uncoveredSince.values.min(), now - since > manifest.recoveryTimeout {
            gaveUp = true
            let names = registry.missingNames.joined(separator: ", ")
            let n = core.activeRequests + core.queueLength
            logger.error("no worker took over the layers of \(names) within recovery_timeout (\(manifest.recoveryTimeout) s): \(n) requests end")
            metrics.requestsGaveUp(n)
            core.failAll(BackendError.unavailable(
                "worker \(names) stopped answering and no worker took over its layers within \(Int(manifest.recoveryTimeout)) s",
                retryAfter: Int(max(manifest.heartbeatTimeout, 1))), now: now)
        }
    }

    private func sendFrames(now: Double) {
        guard registry.isWhole else { return }
        while let batch = core.nextBatch(now: now) {
            let stepID = UInt64(registry.epoch) << 40 | (batch.id & Self.stepMask)
            do {
                try pipeline.encode(batch, stepID: stepID) { try transport.sendData($0) }
            } catch {
                logger.error("cannot send a frame to the first stage: \(error)")
            }
            peakFramesInFlight = max(peakFramesInFlight, core.framesInFlight)
        }
    }

    // MARK: - Status

    /// Whether new requests are taken, and why not.
    private var admission: Admission {
        if draining { return .closed("the coordinator is shutting down", retryAfter: 5) }
        if registry.isWhole || (everWhole && !gaveUp) { return .open }
        let missing = registry.missingNames
        let why = missing.isEmpty
            ? registry.records.filter { $0.home != nil && $0.phase != .ready }.map { "\($0.name) is \($0.phase.rawValue)" }.joined(separator: ", ")
            : "\(missing.joined(separator: ", ")) stopped answering and no worker took over"
        return .closed("the cluster is not ready: \(why.isEmpty ? "starting" : why)", retryAfter: Int(max(manifest.heartbeatTimeout, 1)))
    }

    func health(now: Double) -> HealthReport {
        let statuses = registry.records.map { $0.status(layers: registry.layers(of: $0), now: now) }
        var missing = registry.missingNames
        if !registry.isWhole && missing.isEmpty {
            missing = registry.records.filter { $0.home != nil && $0.phase != .ready && $0.phase != .leaving }.map(\.name)
        }
        return HealthReport(ready: registry.isWhole, workers: statuses, missing: missing, draining: draining, insecure: insecure)
    }

    var stageSummary: String {
        guard let ranges = registry.ranges else { return "" }
        return ranges.indices.map { "\(registry.holder($0)?.name ?? "-") \(ranges[$0].lowerBound)-\(ranges[$0].upperBound - 1)" }
            .joined(separator: ", ")
    }

    private func publish(now: Double) {
        var s = ServingFrontend.Snapshot()
        s.health = health(now: now)
        s.counters = core.countersNow(now)
        s.counters.recoveries = metrics.recoveryCount
        s.slots = core.slotStatuses()
        s.admission = admission
        s.queued = core.queueLength
        s.stageSummary = stageSummary
        s.peakFramesInFlight = peakFramesInFlight
        frontend.publish(s)
    }

    /// Ends everything still running (the coordinator stops).
    func close() {
        let error = BackendError.unavailable("the coordinator is shutting down", retryAfter: 5)
        core.failAll(error, now: monotonicNow())
        frontend.failPending(error)
    }
}
