import ClusterTransport
import ClusterWire
import LlamaInference
import LlamaModel
import Logging

/// The workers of the manifest: who joined (with which key), who is alive, which pipeline
/// position each runs, the epochs, and the takeovers when a worker goes missing or leaves.
///
/// A pure state machine: the loop feeds it control messages and the time, and sends what it
/// leaves in ``outbox``. Its tests drive it directly, with no sockets and no clock.
final class WorkerRegistry {
    let manifest: ClusterManifest
    let model: ModelFacts
    let logger: Logger
    /// Where the last stage sends its output.
    var returnEndpoint: String
    /// The coordinator's CURVE public key (nil without security).
    let coordinatorKey: String?

    private(set) var records: [WorkerRecord]
    /// Per pipeline position: its layers (fixed once computed) and who runs them now.
    private(set) var ranges: [Range<Int>]?
    var holders: [String?]
    var epoch: UInt32 = 0
    /// Positions without a live holder, and since when.
    private(set) var uncoveredSince: [Int: Double] = [:]
    /// A handover prepared for a leaving worker: the standby loads first, then the epoch turns.
    var handover: (epoch: UInt32, position: Int, standby: String, leaver: String)?
    let startedAt: Double

    /// Messages to send: (routing identity, message).
    var outbox: [(String, WireMessage)] = []
    /// Set when a new epoch began (the pipeline must be rewired and every sequence replayed).
    var epochChanges: [String] = []
    /// Peers refused (wrong key for a name, unknown names): for logs and metrics.
    var refusals: [String] = []
    /// Workers lost (missing, or gone with their layers) since the loop last looked: a
    /// standby may have covered the layers in the same instant, and it still is a recovery.
    var losses: [String] = []
    /// Heartbeat news since the loop last looked: (worker, tokens more, busy seconds more).
    var heartbeatNews: [(name: String, tokens: Int, busy: Double)] = []

    init(manifest: ClusterManifest, model: ModelFacts, returnEndpoint: String, coordinatorKey: String?,
         logger: Logger, now: Double) {
        self.manifest = manifest
        self.model = model
        self.returnEndpoint = returnEndpoint
        self.coordinatorKey = coordinatorKey
        self.logger = logger
        startedAt = now
        var home = 0
        records = manifest.workers.map { w in
            defer { if !w.standby { home += 1 } }
            return WorkerRecord(name: w.name, home: w.standby ? nil : home, key: w.key)
        }
        holders = [String?](repeating: nil, count: manifest.stages.count)
    }

    func record(_ name: String) -> WorkerRecord? { records.first { $0.name == name } }
    func holder(_ position: Int) -> WorkerRecord? { holders[position].flatMap(record) }

    /// Every position's layers run by a worker that is ready for the current epoch.
    var isWhole: Bool {
        ranges != nil && holders.indices.allSatisfy { p in
            guard let h = holder(p) else { return false }
            return (h.phase == .ready || h.phase == .leaving) && h.readyEpoch == epoch
        }
    }

    /// Names of the workers whose layers nobody runs now.
    var missingNames: [String] {
        uncoveredSince.keys.sorted().map { p in manifest.stages[p].name }
    }

    // MARK: - Control messages

    /// What the loop must do besides sending the outbox.
    enum Outcome {
        case done
        /// A weight request from an authenticated worker for one of its own tensors' layers.
        case serveWeights(WorkerRecord, WeightRequest)
    }

    func handle(identity: String, authenticatedKey: String?, peerAddress: String?, message: WireMessage,
                now: Double) -> Outcome {
        let isHeartbeatSocket = identity.hasSuffix("#hb")
        let controlIdentity = isHeartbeatSocket ? String(identity.dropLast(3)) : identity
        // With security a worker's routing id is `name@tag` (a tag only its secret key gives).
        let name = manifest.securityKey == nil ? controlIdentity
            : String(controlIdentity.prefix { $0 != "@" })
        guard let w = record(name) else {
            refuse("a peer at \(peerAddress ?? "?") claims the name \(name.debugDescription), which the manifest does not list")
            if manifest.securityKey == nil, !isHeartbeatSocket {
                outbox.append((identity, .error(ErrorReport(code: .invalidAssignment,
                    message: "no worker named \(name.debugDescription) in the manifest (it lists \(records.map(\.name).joined(separator: ", ")))"))))
            }
            return .done
        }
        // With CURVE the handshake proved a key; the name must be the one the manifest gives it.
        if manifest.securityKey != nil, authenticatedKey != w.key {
            refuse("a peer at \(peerAddress ?? "?") with key \(authenticatedKey ?? "none") claims the name \(name), whose key is \(w.key ?? "none")")
            return .done
        }
        w.peerAddress = peerAddress ?? w.peerAddress
        w.routingID = controlIdentity
        switch message {
        case .join(let j):
            handleJoin(w, j, now: now)
        case .heartbeat(let hb):
            guard w.isLive else {
                // It thinks it has joined but we do not know it (we restarted, or it was missing).
                outbox.append((controlIdentity, .error(ErrorReport(code: .notJoined, message: "join again"))))
                return .done
            }
            w.lastSeen = now
            let dt = hb.busySeconds - w.busySeconds, dn = Double(hb.tokensProcessed) - Double(w.tokensProcessed)
            // The rate over at least 10 ms of work (a fast stage may do less between two heartbeats).
            if hb.busySeconds < w.rateBase.busySeconds || hb.tokensProcessed < w.rateBase.tokens { w.rateBase = (0, 0) }  // it restarted
            let rateSeconds = hb.busySeconds - w.rateBase.busySeconds
            if rateSeconds > 0.01 {
                w.rate = (Double(hb.tokensProcessed) - Double(w.rateBase.tokens)) / rateSeconds
                w.rateBase = (hb.tokensProcessed, hb.busySeconds)
            }
            heartbeatNews.append((w.name, max(0, Int(dn)), max(0, dt)))
            w.tokensProcessed = hb.tokensProcessed
            w.busySeconds = hb.busySeconds
            outbox.append((identity, .heartbeat(Heartbeat(sequence: hb.sequence, unixTimeNanos: 0, tokensProcessed: 0, busySeconds: 0))))
        case .ready(let r):
            guard w.isLive else { return .done }
            w.lastSeen = now
            w.residentBytes = r.residentBytes
            if let h = handover, h.standby == w.name, r.epoch == h.epoch {
                w.readyEpoch = r.epoch
                completeHandover(now: now)
            } else if r.epoch == epoch, w.position != nil {
                w.readyEpoch = r.epoch
                if w.phase == .loading { w.phase = .ready }
                logger.info("\(w.name) ready: layers \(r.layerBegin)-\(r.layerEnd - 1), epoch \(r.epoch), \(r.residentBytes / 1_048_576) MiB resident")
            }
        case .weightRequest(let req):
            guard w.isLive else { return .done }
            w.lastSeen = now
            return .serveWeights(w, req)
        case .calibrationResult(let c):
            w.speed = StageSpeed(secondsPerLayer: c.layerDecodeSeconds)
            logger.info("\(w.name) runs one layer in \(String(format: "%.2f", c.layerDecodeSeconds * 1e3)) ms per token")
            placeIfPossible(now: now)
        case .shutdown:
            leave(w, now: now)
        case .error(let e) where ranges == nil && w.calibrationAsked && w.speed == nil && !w.calibrationFailed:
            // Timing a layer is a help, not a condition: placement falls back to memory.
            logger.warning("\(w.name) could not time a layer (\(e.message)); layers are split by memory")
            w.calibrationFailed = true
            placeIfPossible(now: now)
        case .error(let e):
            logger.error("\(w.name) reported: \(e.message)")
            w.lastFailure = e.message
            if let h = handover, h.standby == w.name {
                // The standby cannot take the leaver's layers: the leaver goes as if there were
                // no standby (or another one takes over).
                cancelHandover()
                w.phase = .failed
                if let leaver = record(h.leaver), leaver.phase == .leaving { leave(leaver, now: now) }
            } else if w.phase == .loading {
                w.phase = .failed
                if let p = w.position { uncover(p, now: now, reason: "\(w.name) cannot load its layers") }
            }
        default:
            logger.warning("ignoring unexpected \(message.kind) from \(w.name)")
        }
        return .done
    }

    private func refuse(_ what: String) {
        logger.warning("refused: \(what)")
        refusals.append(what)
    }

    private func handleJoin(_ w: WorkerRecord, _ j: Join, now: Double) {
        guard j.protocolVersion == WireProtocol.version else {
            outbox.append((w.routingID, .error(ErrorReport(code: .protocolVersion,
                message: "worker speaks protocol \(j.protocolVersion), the coordinator \(WireProtocol.version)"))))
            return
        }
        if j.hasModelFile, j.modelFingerprint != model.fingerprint {
            outbox.append((w.routingID, .error(ErrorReport(code: .modelMismatch,
                message: "the worker's model file (fingerprint \(j.modelFingerprint)) is not the coordinator's \(manifest.model) (\(model.fingerprint))"))))
            return
        }
        guard parseTCPEndpoint(j.dataEndpoint) != nil || j.dataEndpoint.hasPrefix("mem://") else {
            outbox.append((w.routingID, .error(ErrorReport(code: .invalidAssignment, message: "data endpoint \(j.dataEndpoint.debugDescription) is not tcp://HOST:PORT"))))
            return
        }
        let rejoin = w.join != nil
        logger.info("\(w.name) \(rejoin ? "re" : "")joined: \(j.threads) threads, \(j.memoryBudgetBytes / 1_048_576) MiB, data \(j.dataEndpoint), \(j.hasModelFile ? "own model file" : "weights streamed"), \(j.cpuFeatures)")
        w.join = j
        w.lastSeen = now
        w.readyEpoch = 0
        w.lastFailure = nil
        if j.layerDecodeSeconds > 0 { w.speed = StageSpeed(secondsPerLayer: j.layerDecodeSeconds) }
        if let h = handover, h.standby == w.name || h.leaver == w.name { cancelHandover() }
        if let p = w.position {
            // The same worker again (it restarted): its position is its own; a new epoch rewires it.
            w.phase = .loading
            uncoveredSince[p] = nil
            if ranges != nil { newEpoch("\(w.name) rejoined") }
            return
        }
        if let home = w.home, holders[home] == nil || record(holders[home]!)?.isLive == false {
            take(home, by: w, now: now)
            return
        }
        // A standby, or a worker whose layers a standby runs now: it waits.
        w.phase = .standby
        logger.info("\(w.name) is a standby")
        takeOverUncovered(now: now)
    }

    /// `w` runs position `p` from now on.
    private func take(_ p: Int, by w: WorkerRecord, now: Double) {
        if let old = holder(p), old !== w { old.position = nil }
        holders[p] = w.name
        w.position = p
        w.phase = .loading
        uncoveredSince[p] = nil
        if ranges == nil {
            placeIfPossible(now: now)
        } else {
            let layers = ranges![p]
            logger.info("\(w.name) takes layers \(layers.lowerBound)-\(layers.upperBound - 1) (position \(p + 1) of \(holders.count))")
            newEpoch("\(w.name) runs layers \(layers.lowerBound)-\(layers.upperBound - 1)")
        }
    }

    // MARK: - Time

    /// Heartbeat timeouts, and standbys taking over missing workers' layers.
    func tick(now: Double) {
        let timeout = manifest.heartbeatTimeout
        for w in records where w.isLive && now - w.lastSeen > timeout {
            logger.error("\(w.name) missing: no heartbeat for \(timeout) s")
            w.phase = .missing
            w.readyEpoch = 0
            if let h = handover, h.standby == w.name || h.leaver == w.name { cancelHandover() }
            if let p = w.position { uncover(p, now: now, reason: "\(w.name) stopped answering") }
        }
        // At start-up, a worker that never joins is replaced by a standby after the grace time.
        if ranges == nil, now - startedAt > 2 * timeout {
            for p in holders.indices where holders[p] == nil { uncoveredSince[p] = uncoveredSince[p] ?? now }
        }
        takeOverUncovered(now: now)
        if ranges == nil { placeIfPossible(now: now) }
    }

    func uncover(_ p: Int, now: Double, reason: String) {
        uncoveredSince[p] = uncoveredSince[p] ?? now
        losses.append(manifest.stages[p].name)
        logger.warning("layers of position \(p + 1) are not served: \(reason)")
        takeOverUncovered(now: now)
    }

    /// Gives every uncovered position to an idle standby, when there is one.
    private func takeOverUncovered(now: Double) {
        for p in uncoveredSince.keys.sorted() {
            guard let s = records.first(where: { $0.canTakeOver && $0.isLive }) else { return }
            logger.info("standby \(s.name) takes over position \(p + 1)")
            take(p, by: s, now: now)
        }
    }

    /// A frame was lost inside the pipeline: every stage starts a fresh epoch.
    func frameLost(reason: String) {
        guard ranges != nil else { return }
        newEpoch(reason)
    }

    // MARK: - Placement and epochs

    /// Computes the layer ranges once every position has a live holder (asking workers to
    /// time a layer first when placement by speed needs it), then starts epoch 1.
    private func placeIfPossible(now: Double) {
        guard ranges == nil, holders.indices.allSatisfy({ holder($0)?.isLive == true }) else { return }
        let stageNames = manifest.stages.map(\.name)
        var memory: [String: Int] = [:], speed: [String: StageSpeed] = [:]
        for (p, name) in stageNames.enumerated() {
            let h = holder(p)!
            memory[name] = Int(clamping: h.join!.memoryBudgetBytes)
            if let s = h.speed { speed[name] = s }
        }
        // Workers that kept their layers through a coordinator restart keep them.
        if let held = heldPlacement() {
            ranges = held
            let summary = holders.indices.map { "\(holder($0)!.name) \(held[$0].lowerBound)-\(held[$0].upperBound - 1)" }
            logger.info("layer assignment (the layers the workers still hold): \(summary.joined(separator: ", "))")
            newEpoch("every position has a worker")
            return
        }
        // Placement by speed needs every balanced worker timed; ask those that have not been.
        let balanced = manifest.stages.enumerated().filter { $0.element.layers == nil }.map(\.offset)
        if balanced.count > 1 {
            var waiting = false
            for p in balanced where holder(p)!.speed == nil && !holder(p)!.calibrationFailed {
                let h = holder(p)!
                if !h.calibrationAsked {
                    h.calibrationAsked = true
                    h.calibrationAskedAt = now
                    outbox.append((h.routingID, .calibrationRequest(CalibrationRequest(hyperparameters: model.hyperparameters, ggmlType: model.layerType))))
                }
                // A worker gets a minute to time its layer; then memory decides.
                if now - h.calibrationAskedAt < 60 { waiting = true }
            }
            if waiting { return }
        }
        do {
            let byName = try manifest.assignLayers(layerCount: model.layerCount, memory: memory, speed: speed, layerBytes: model.layerBytes)
            ranges = stageNames.map { byName[$0]! }
        } catch {
            logger.error("cannot assign layers: \(error)")
            return
        }
        let summary = holders.indices.map { "\(holder($0)!.name) \(ranges![$0].lowerBound)-\(ranges![$0].upperBound - 1)" }
        logger.info("layer assignment: \(summary.joined(separator: ", "))")
        newEpoch("every position has a worker")
    }

    /// The placement the workers' joins say they hold, when it tiles the model in pipeline
    /// order and agrees with the manifest's explicit ranges (after a coordinator restart:
    /// nothing is then loaded, streamed or timed again), else nil.
    private func heldPlacement() -> [Range<Int>]? {
        var next = 0
        var out: [Range<Int>] = []
        for (p, stage) in manifest.stages.enumerated() {
            guard let held = holder(p)?.join?.heldLayers, held.lowerBound < held.upperBound else { return nil }
            let r = Int(held.lowerBound)..<Int(held.upperBound)
            guard r.lowerBound == next, stage.layers == nil || stage.layers == r else { return nil }
            out.append(r)
            next = r.upperBound
        }
        return next == model.layerCount ? out : nil
    }

    /// Starts a new epoch: every live holder gets its assignment again (new pipeline addresses
    /// included) and must answer Ready before frames flow.
    private func newEpoch(_ reason: String) {
        guard ranges != nil else { return }
        epoch &+= 1
        if let h = handover, h.epoch <= epoch { cancelHandover() }
        epochChanges.append(reason)
        // Last stage first: each stage learns whom to let in before its previous stage,
        // told to connect, knocks.
        for p in holders.indices.reversed() {
            guard let w = holder(p), w.isLive else { continue }
            if w.phase == .ready { w.phase = .loading }
            outbox.append((w.routingID, .shardAssignment(assignment(for: p, holders: holders, epoch: epoch))))
        }
    }

    /// The assignment of position `p` when `holders` run the pipeline in `epoch`.
    func assignment(for p: Int, holders: [String?], epoch: UInt32) -> ShardAssignment {
        let w = record(holders[p]!)!, j = w.join!
        let layers = ranges![p]
        let next = p + 1 < holders.count ? holders[p + 1].flatMap(record) : nil
        let output = next?.join?.dataEndpoint ?? returnEndpoint
        var inputKeys: [String] = []
        if let k = coordinatorKey { inputKeys.append(k) }
        if p > 0, let prev = holders[p - 1].flatMap(record), let k = prev.key { inputKeys.append(k) }
        return ShardAssignment(
            layerBegin: UInt32(layers.lowerBound), layerEnd: UInt32(layers.upperBound), modelFingerprint: model.fingerprint,
            activationDType: manifest.activations == .f16 ? .f16 : .f32, maxSequences: UInt32(manifest.maxSequences),
            contextLength: UInt32(model.contextLength),
            input: PipelineEndpoint(address: j.dataEndpoint, mode: .bind),
            output: PipelineEndpoint(address: output, mode: .connect),
            streamWeights: !j.hasModelFile, hyperparameters: model.hyperparameters, epoch: epoch,
            maxBatch: UInt32(max(manifest.batch, manifest.maxSequences)),
            kvCacheDType: manifest.kvCache.wire, inputPeerKeys: inputKeys,
            outputServerKey: next == nil ? (coordinatorKey ?? "") : (next?.key ?? ""),
            heartbeatTimeout: manifest.heartbeatTimeout)
    }

    /// The first stage's input, for the coordinator's data output.
    var firstStage: PeerEndpoint? {
        guard let w = holder(0), let j = w.join else { return nil }
        return PeerEndpoint(address: j.dataEndpoint, serverKey: w.key)
    }

    /// Keys allowed to send frames back to the coordinator: the last stage's.
    var returnPeerKeys: Set<String> {
        guard let w = holder(holders.count - 1), let k = w.key else { return [] }
        return [k]
    }

    /// The layers `w` runs now, or loads for a handover (a standby taking a leaving worker's
    /// layers holds no position until the handover completes, but needs their weights).
    func layers(of w: WorkerRecord) -> Range<Int>? {
        guard let ranges else { return nil }
        if let p = w.position { return ranges[p] }
        if let h = handover, h.standby == w.name { return ranges[h.position] }
        return nil
    }

    /// Seconds one frame of `tokens` tokens should take through every stage, by the
    /// measured speeds (nil until every stage has reported one).
    func predictedSeconds(tokens: Int) -> Double? {
        var total = 0.0
        for p in holders.indices {
            guard let w = holder(p), w.rate > 0 else { return nil }
            total += Double(tokens) / w.rate
        }
        return total
    }
}

extension KVCacheType {
    /// How a shard assignment names this type.
    var wire: KVCacheDType { self == .f16 ? .f16 : .f32 }
}
