#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ClusterTransport
import ClusterWire
import Foundation
import GGUF
import LlamaKernels
import LlamaModel
import LlamaSampling
import LlamaServer
import LlamaTokenizer
import Logging

/// Errors a client of the cluster can see.
public enum ClusterError: Error, CustomStringConvertible {
    case notReady(String)
    case workerLost(String)
    case invalidRequest(String)
    case shuttingDown

    public var description: String {
        switch self {
        case .notReady(let s): return "the cluster is not ready: \(s)"
        case .workerLost(let s): return s
        case .invalidRequest(let s): return s
        case .shuttingDown: return "the coordinator is shutting down"
        }
    }
}

/// The coordinator: owns the tokenizer, embedding, final norm and output head; assigns layer
/// ranges to workers; and runs every request through the pipeline
/// coordinator → worker 1 → … → worker N → coordinator, batching the sequences of each step
/// into one frame.
public final class Coordinator: CompletionBackend, @unchecked Sendable {
    public let manifest: ClusterManifest
    public let config: LlamaConfig
    public let tokenizer: LlamaTokenizer
    public let fingerprint: String
    public let contextLength: Int
    public var modelName: String
    public var bosID: Int32 { tokenizer.bosID }
    public var vocabularySize: Int? { config.vocabSize }
    public var eosID: Int32 { tokenizer.eosID }

    let file: GGUFFile
    let head: LlamaHead
    let pool: ThreadPool
    let logger: Logger
    let context: ZMQContext

    // Shared with other threads, under `lock`.
    private let lock = NSLock()
    private var incoming: [RequestState] = []
    private var cancelled = Set<Int>()
    private var statusSnapshot: [WorkerStatus] = []
    private var readySnapshot = false
    private var missingSnapshot: [String] = []
    private var peakInFlightSnapshot = 0
    private var metricsSnapshot = BackendMetrics()
    private var wakeSender: ZMQSocket
    private let wakeAddress: String
    private var nextRequestID = 0
    private var stopRequested = false
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)

    /// The data endpoint workers send results back to, once started.
    public private(set) var returnEndpoint = ""

    /// Loads the model's head and tokenizer; `start()` opens the sockets.
    public init(manifest: ClusterManifest, logger: Logger) throws {
        self.manifest = manifest
        self.logger = logger
        file = try GGUFFile(path: manifest.model)
        config = try LlamaConfig(gguf: file)
        tokenizer = LlamaTokenizer(vocabulary: try Vocabulary(gguf: file))
        fingerprint = modelFingerprint(file)
        contextLength = min(manifest.context ?? config.contextLength, config.contextLength)
        modelName = file.metadata["general.name"]?.string ?? (manifest.model as NSString).lastPathComponent
        _ = try manifest.assignLayers(layerCount: config.layerCount)  // explicit ranges must fit this model
        pool = ThreadPool(threadCount: manifest.coordinatorThreads ?? defaultThreadCount)
        head = try LlamaHead(file: file, config: config, maxBatch: max(manifest.batch, manifest.maxSequences), pool: pool)
        context = try ZMQContext()
        wakeAddress = "inproc://coordinator-wake-\(UUID().uuidString)"
        wakeSender = try context.socket(.push)
    }

    // MARK: - Lifecycle

    /// Binds the control and data sockets and starts the scheduler thread.
    public func start() throws {
        let scheduler = try Scheduler(coordinator: self)
        try wakeSender.set(.linger(milliseconds: 0))
        try wakeSender.connect(wakeAddress)
        returnEndpoint = scheduler.returnEndpoint
        publish(scheduler)
        let t = Thread { [self] in
            scheduler.run()
            stopped.signal()
        }
        t.name = "scheduler"
        t.stackSize = 8 << 20
        thread = t
        t.start()
        logger.info("coordinator: control \(manifest.controlAddress), data return \(returnEndpoint), waiting for \(manifest.workers.map(\.name).joined(separator: ", "))")
    }

    /// Stops the scheduler; requests in flight end with an error.
    public func shutdown() {
        lock.withLock { stopRequested = true }
        wake()
        if thread != nil { stopped.wait() }
        thread = nil
    }

    fileprivate var shouldStop: Bool { lock.withLock { stopRequested } }

    private func wake() {
        lock.withLock { _ = try? wakeSender.send([[1]], timeout: .zero) }
    }

    // MARK: - CompletionBackend

    public func tokenize(_ text: String, addBOS: Bool) -> [Int32] { tokenizer.encode(text, addBOS: addBOS) }
    public func detokenize(_ ids: [Int32]) -> String { tokenizer.decode(ids) }

    public func submit(_ job: CompletionJob) -> AsyncThrowingStream<CompletionEvent, Error> {
        AsyncThrowingStream { continuation in
            if let problem = validate(job) {
                continuation.finish(throwing: APIError.invalidRequest(problem))
                return
            }
            let request: RequestState
            do {
                request = try lock.withLock {
                    nextRequestID += 1
                    return try RequestState(id: nextRequestID, job: job, vocabularySize: config.vocabSize,
                                            decoder: tokenizer.makeStreamingDecoder(startsText: false), continuation: continuation)
                }
            } catch {
                continuation.finish(throwing: APIError.invalidRequest("\(error)"))
                return
            }
            continuation.onTermination = { [weak self] reason in
                guard let self, case .cancelled = reason else { return }
                self.lock.withLock { _ = self.cancelled.insert(request.id) }
                self.wake()
            }
            lock.withLock { incoming.append(request) }
            wake()
        }
    }

    private func validate(_ job: CompletionJob) -> String? {
        if job.promptTokens.isEmpty { return "the prompt is empty" }
        if job.promptTokens.count >= contextLength {
            return "the prompt has \(job.promptTokens.count) tokens but the context holds \(contextLength)"
        }
        if job.maxTokens < 0 { return "max_tokens must be at least 0" }
        if let bad = job.promptTokens.first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            return "token id \(bad) is outside the vocabulary of \(config.vocabSize)"
        }
        return nil
    }

    public func health() -> (ready: Bool, workers: [WorkerStatus]) {
        lock.withLock { (readySnapshot, statusSnapshot) }
    }

    public func metrics() -> BackendMetrics {
        lock.withLock { metricsSnapshot }
    }

    /// Names of workers that stopped answering.
    public var missingWorkers: [String] { lock.withLock { missingSnapshot } }

    /// The most frames that were in the pipeline at once since the start (at most the
    /// manifest's `frames_in_flight`, by default one per worker).
    public var peakFramesInFlight: Int { lock.withLock { peakInFlightSnapshot } }

    // MARK: - Exchange with the scheduler thread

    fileprivate func takeIncoming() -> (requests: [RequestState], cancelled: Set<Int>) {
        lock.withLock {
            defer { incoming.removeAll(); cancelled.removeAll() }
            return (incoming, cancelled)
        }
    }

    fileprivate func publish(_ s: Scheduler) {
        let statuses = s.workerStatuses()
        let ready = s.clusterReady
        let missing = s.workers.filter { $0.state == .missing }.map(\.name)
        var metrics = s.metrics
        metrics.requestsActive = s.active.count
        metrics.queueLength = s.queue.count
        lock.withLock {
            statusSnapshot = statuses
            readySnapshot = ready
            missingSnapshot = missing
            peakInFlightSnapshot = s.peakInFlight
            metricsSnapshot = metrics
            metricsSnapshot.queueLength += incoming.count
        }
    }

    fileprivate var wakeEndpoint: String { wakeAddress }
}

// MARK: - Requests

/// One request in the scheduler. Only the scheduler thread touches it after submission.
final class RequestState {
    let id: Int
    let job: CompletionJob
    let sampler: Sampler
    var decoder: StreamingDecoder
    let continuation: AsyncThrowingStream<CompletionEvent, Error>.Continuation
    /// Prompt then generated tokens.
    var tokens: [Int32]
    /// How many of `tokens` have been sent into the pipeline.
    var sent = 0
    /// A frame carrying this request's last token (whose logits we wait for) is in flight.
    var awaitingLogits = false
    var generated = 0
    var slot: Int32 = -1
    var finished = false

    init(id: Int, job: CompletionJob, vocabularySize: Int, decoder: StreamingDecoder,
         continuation: AsyncThrowingStream<CompletionEvent, Error>.Continuation) throws {
        self.id = id
        self.job = job
        self.sampler = try Sampler(parameters: job.parameters.validated(), vocabularySize: vocabularySize)
        self.decoder = decoder
        self.continuation = continuation
        tokens = job.promptTokens
        sampler.accept(contentsOf: job.promptTokens)
    }

    var hasTokensToSend: Bool { !finished && !awaitingLogits && sent < tokens.count }
}

// MARK: - Workers

enum WorkerPhase: String {
    case waiting, loading, ready, missing, failed
}

final class WorkerRecord {
    let name: String
    let index: Int
    var state = WorkerPhase.waiting
    var join: Join?
    var layers: Range<Int>?
    var lastSeen = 0.0
    var readyEpoch: UInt32 = 0
    var residentBytes: UInt64 = 0
    var tokensProcessed: UInt64 = 0
    var busySeconds = 0.0
    var rate = 0.0
    var lastFailure: String?

    init(name: String, index: Int) {
        self.name = name
        self.index = index
    }
}

// MARK: - Scheduler

/// Runs on its own thread and owns every socket: the control ROUTER, the data output to the
/// first worker and the data input from the last, and the wake-up socket.
final class Scheduler {
    unowned let coordinator: Coordinator
    let logger: Logger
    let control: ZMQSocket
    let dataIn: ZMQSocket
    var dataOut: ZMQSocket?
    var dataOutAddress: String?
    let wakeReceiver: ZMQSocket
    let returnEndpoint: String

    var workers: [WorkerRecord]
    var ranges: [String: Range<Int>]?
    var epoch: UInt32 = 0
    var frameCounter: UInt64 = 0
    var clusterReady = false
    var metrics = BackendMetrics()

    var queue: [RequestState] = []
    var active: [RequestState] = []
    var freeSlots: [Int32]
    var inFlight: [UInt64: [(request: RequestState, row: Int)]] = [:]
    var peakInFlight = 0
    var sentAt: [UInt64: Double] = [:]
    var roundRobin = 0
    var recentTokens: [(time: Double, count: Int)] = []

    let codec = ActivationCodec()
    var frame = ActivationFrame()
    var returned = ActivationFrame()
    var encoded: [UInt8] = []
    var logits: [Float]
    var embedScratch: [Int32] = []

    init(coordinator: Coordinator) throws {
        self.coordinator = coordinator
        logger = coordinator.logger
        let ctx = coordinator.context
        control = try ctx.socket(.router)
        try control.set(.linger(milliseconds: 0))
        try control.set(.routerHandover(true))
        try control.set(.routerMandatory(false))
        try control.bind(coordinator.manifest.controlAddress)

        dataIn = try ctx.socket(.pull)
        try dataIn.set(.linger(milliseconds: 0))
        guard let (host, _) = parseTCPEndpoint(coordinator.manifest.controlAddress) else {
            throw ManifestError(field: "coordinator.control", reason: "not a tcp:// address")
        }
        try dataIn.bind("tcp://\(host):*")
        let bound = parseTCPEndpoint(try dataIn.lastEndpoint)!
        returnEndpoint = "tcp://\(host == "0.0.0.0" ? "*" : host):\(bound.port)"

        wakeReceiver = try ctx.socket(.pull)
        try wakeReceiver.bind(coordinator.wakeEndpoint)

        workers = coordinator.manifest.workers.enumerated().map { WorkerRecord(name: $1.name, index: $0) }
        freeSlots = (0..<Int32(coordinator.manifest.maxSequences)).reversed()
        logits = [Float](repeating: 0, count: max(coordinator.manifest.batch, coordinator.manifest.maxSequences) * coordinator.config.vocabSize)
    }

    var now: Double { Date().timeIntervalSinceReferenceDate }

    func run() {
        let poller = ZMQPoller()
        let ci = poller.register(control)
        let di = poller.register(dataIn)
        let wi = poller.register(wakeReceiver)
        var lastCheck = 0.0
        while !coordinator.shouldStop {
            do {
                _ = try poller.poll(timeout: .milliseconds(50))
                if poller.isReadable(ci) { while let parts = try control.receive(timeout: .zero) { handleControl(parts) } }
                if poller.isReadable(wi) { while try wakeReceiver.receive(timeout: .zero) != nil {} }
                if poller.isReadable(di) { while let parts = try dataIn.receive(timeout: .zero) { handleReturn(parts) } }
                intake()
                if now - lastCheck > 0.1 {
                    lastCheck = now
                    checkHeartbeats()
                }
                schedule()
                coordinator.publish(self)
            } catch {
                logger.error("scheduler: \(error)")
                usleep(10_000)
            }
        }
        for r in queue + active { fail(r, ClusterError.shuttingDown) }
        let (late, _) = coordinator.takeIncoming()
        for r in late { r.continuation.finish(throwing: ClusterError.shuttingDown) }
    }

    // MARK: Control messages

    func sendControl(_ name: String, _ message: WireMessage) {
        do {
            try control.send([Array(name.utf8), message.encode()])
        } catch {
            logger.warning("cannot send \(message.kind) to \(name): \(error)")
        }
    }

    func handleControl(_ parts: [[UInt8]]) {
        guard parts.count >= 2, let identity = String(validating: parts[0], as: UTF8.self) else {
            logger.error("rejected a control frame without a worker identity")
            return
        }
        let message: WireMessage
        do {
            message = try WireMessage.decode(parts[parts.count - 1])
        } catch {
            logger.error("rejected a control frame from \(identity.debugDescription): \(error)")
            return
        }
        let isHeartbeatSocket = identity.hasSuffix("#hb")
        let name = isHeartbeatSocket ? String(identity.dropLast(3)) : identity
        guard let worker = workers.first(where: { $0.name == name }) else {
            logger.warning("message from unknown worker \(name.debugDescription); the manifest lists \(workers.map(\.name))")
            if !isHeartbeatSocket {
                sendControl(identity, .error(ErrorReport(code: .invalidAssignment,
                    message: "no worker named \(name.debugDescription) in the manifest (it lists \(workers.map(\.name).joined(separator: ", ")))")))
            }
            return
        }
        switch message {
        case .join(let j): handleJoin(worker, j)
        case .heartbeat(let hb):
            guard worker.state != .waiting, worker.state != .missing else {
                // The worker thinks it has joined but we do not know it (we restarted, or it was
                // declared missing): ask it to join again.
                sendControl(name, .error(ErrorReport(code: .notJoined, message: "join again")))
                return
            }
            worker.lastSeen = now
            let dt = hb.busySeconds - worker.busySeconds
            let dn = Double(hb.tokensProcessed) - Double(worker.tokensProcessed)
            if dt > 0.01 { worker.rate = dn / dt }
            worker.tokensProcessed = hb.tokensProcessed
            worker.busySeconds = hb.busySeconds
        case .ready(let r):
            worker.lastSeen = now
            worker.residentBytes = r.residentBytes
            if r.epoch == epoch {
                worker.readyEpoch = r.epoch
                worker.state = .ready
                logger.info("\(name) ready: layers \(r.layerBegin)..<\(r.layerEnd), \(r.residentBytes / 1_048_576) MiB resident")
                updateReadiness()
            }
        case .weightRequest(let req): serveWeights(worker, req)
        case .error(let e):
            logger.error("\(name) reported: \(e.message)")
            worker.lastFailure = e.message
            if worker.state == .loading { worker.state = .failed }
        default:
            logger.warning("ignoring unexpected \(message.kind) from \(name)")
        }
    }

    func handleJoin(_ worker: WorkerRecord, _ j: Join) {
        let c = coordinator
        guard j.protocolVersion == WireProtocol.version else {
            sendControl(worker.name, .error(ErrorReport(code: .protocolVersion,
                message: "worker speaks protocol \(j.protocolVersion), the coordinator \(WireProtocol.version)")))
            return
        }
        if j.hasModelFile, j.modelFingerprint != c.fingerprint {
            sendControl(worker.name, .error(ErrorReport(code: .modelMismatch,
                message: "the worker's model file (fingerprint \(j.modelFingerprint)) is not the coordinator's \(c.manifest.model) (\(c.fingerprint))")))
            return
        }
        guard parseTCPEndpoint(j.dataEndpoint) != nil else {
            sendControl(worker.name, .error(ErrorReport(code: .invalidAssignment, message: "data endpoint \(j.dataEndpoint.debugDescription) is not tcp://HOST:PORT")))
            return
        }
        let rejoin = worker.join != nil
        logger.info("\(worker.name) \(rejoin ? "re" : "")joined: \(j.threads) threads, \(j.memoryBudgetBytes / 1_048_576) MiB, data \(j.dataEndpoint), \(j.hasModelFile ? "own model file" : "weights streamed"), \(j.cpuFeatures)")
        worker.join = j
        worker.state = .loading
        worker.lastSeen = now
        worker.readyEpoch = 0
        worker.lastFailure = nil
        if ranges == nil, workers.allSatisfy({ $0.join != nil }) {
            do {
                var memory: [String: Int] = [:]
                for w in workers { memory[w.name] = Int(w.join!.memoryBudgetBytes) }
                ranges = try c.manifest.assignLayers(layerCount: c.config.layerCount, memory: memory)
                for w in workers { w.layers = ranges![w.name] }
                let summary = workers.map { "\($0.name) \($0.layers!.lowerBound)-\($0.layers!.upperBound - 1)" }.joined(separator: ", ")
                logger.info("layer assignment: \(summary)")
            } catch {
                logger.error("cannot assign layers: \(error)")
                return
            }
        }
        if ranges != nil { reassign(reason: rejoin ? "\(worker.name) rejoined" : "all workers joined") }
    }

    /// Starts a new epoch: every joined worker gets its assignment again (new pipeline addresses
    /// included) and must answer Ready before frames flow.
    func reassign(reason: String) {
        guard let ranges else { return }
        epoch &+= 1
        clusterReady = false
        // Frames of the old epoch will be dropped and the workers' caches are cleared: requests
        // still running start over from their first token (what they already streamed stays
        // valid, since the same tokens are fed again).
        for r in active {
            r.sent = 0
            r.awaitingLogits = false
        }
        inFlight.removeAll()
        sentAt.removeAll()
        let c = coordinator
        logger.info("epoch \(epoch): \(reason)")
        for (i, w) in workers.enumerated() {
            guard let j = w.join, w.state != .missing, let layers = ranges[w.name] else { continue }
            let next = i + 1 < workers.count ? (workers[i + 1].join?.dataEndpoint ?? "") : returnEndpoint
            let a = ShardAssignment(
                layerBegin: UInt32(layers.lowerBound), layerEnd: UInt32(layers.upperBound), modelFingerprint: c.fingerprint,
                activationDType: c.manifest.activations == .f16 ? .f16 : .f32, maxSequences: UInt32(c.manifest.maxSequences),
                contextLength: UInt32(c.contextLength),
                input: PipelineEndpoint(address: j.dataEndpoint, mode: .bind),
                output: PipelineEndpoint(address: next, mode: .connect),
                streamWeights: !j.hasModelFile,
                hyperparameters: ModelHyperparameters(
                    layerCount: UInt32(c.config.layerCount), embeddingWidth: UInt32(c.config.dim),
                    feedForwardWidth: UInt32(c.config.ffnDim), headCount: UInt32(c.config.headCount),
                    kvHeadCount: UInt32(c.config.kvHeadCount), vocabularySize: UInt32(c.config.vocabSize),
                    trainingContextLength: UInt32(c.config.contextLength), ropeFreqBase: c.config.ropeBase,
                    rmsNormEpsilon: c.config.rmsEpsilon, ropeDimensionCount: UInt32(c.config.ropeDim)),
                epoch: epoch, maxBatch: UInt32(max(c.manifest.batch, c.manifest.maxSequences)),
                kvCacheDType: c.manifest.kvCache.wire)
            if w.state == .ready { w.state = .loading }
            sendControl(w.name, .shardAssignment(a))
        }
        // Our output goes to the first worker's input.
        if let first = workers.first?.join?.dataEndpoint, first != dataOutAddress {
            do {
                let s = try c.context.socket(.push)
                try s.set(.linger(milliseconds: 0))
                try s.connect(first)
                dataOut = s
                dataOutAddress = first
            } catch {
                logger.error("cannot connect to \(first): \(error)")
            }
        }
    }

    func updateReadiness() {
        let ready = ranges != nil && workers.allSatisfy { $0.state == .ready && $0.readyEpoch == epoch }
        if ready && !clusterReady { logger.info("cluster ready (epoch \(epoch))") }
        clusterReady = ready
    }

    func serveWeights(_ worker: WorkerRecord, _ req: WeightRequest) {
        let c = coordinator
        guard let layers = worker.layers, LlamaTensorName.names(layers: LayerRange(layers)).contains(req.tensorName),
              let t = c.file.tensor(named: req.tensorName) else {
            sendControl(worker.name, .error(ErrorReport(code: .weights, message: "tensor \(req.tensorName.debugDescription) is not part of \(worker.name)'s layers")))
            return
        }
        worker.lastSeen = now
        let offset = Int(req.offset)
        guard offset <= t.byteCount else {
            sendControl(worker.name, .error(ErrorReport(code: .weights, message: "offset \(offset) is past the end of \(t.name) (\(t.byteCount) bytes)")))
            return
        }
        let n = min(Int(req.maxChunkBytes), t.byteCount - offset, 16 << 20)
        let data = c.file.data(for: t)
        let chunk = TensorChunk(tensorName: t.name, ggmlType: t.type.rawValue, shape: t.shape.map { UInt64($0) },
                                offset: UInt64(offset), totalSize: UInt64(t.byteCount),
                                data: Array(UnsafeRawBufferPointer(rebasing: data[offset..<offset + n])))
        sendControl(worker.name, .tensorChunk(chunk))
    }

    func checkHeartbeats() {
        let timeout = coordinator.manifest.heartbeatTimeout
        // A frame that never comes back (a stage rejected it) must not stall its requests forever.
        let frameTimeout = max(60, timeout * 10)
        for (id, t) in sentAt where now - t > frameTimeout {
            sentAt[id] = nil
            for (r, _) in inFlight.removeValue(forKey: id) ?? [] {
                fail(r, ClusterError.workerLost("a pipeline frame did not come back within \(Int(frameTimeout)) s (see the workers' logs)"))
            }
        }
        var lost: [String] = []
        for w in workers where w.state == .loading || w.state == .ready || w.state == .failed {
            if now - w.lastSeen > timeout {
                w.state = .missing
                w.readyEpoch = 0
                lost.append(w.name)
            }
        }
        guard !lost.isEmpty else { return }
        // Health first: a client that sees its request fail must find the cluster reported down.
        clusterReady = false
        coordinator.publish(self)
        let message = "worker \(lost.joined(separator: ", ")) stopped answering (no heartbeat for \(timeout) s); the request was aborted"
        logger.error("\(lost.joined(separator: ", ")) missing: no heartbeat for \(timeout) s")
        for r in active { fail(r, ClusterError.workerLost(message)) }
        active.removeAll()
        inFlight.removeAll()
        sentAt.removeAll()
        freeSlots = (0..<Int32(coordinator.manifest.maxSequences)).reversed()
        // Survivors drop their caches and frames of the old epoch.
        reassign(reason: "\(lost.joined(separator: ", ")) missing")
    }

    // MARK: Requests

    func intake() {
        let (incoming, cancelled) = coordinator.takeIncoming()
        for r in incoming {
            metrics.requestsTotal += 1
            if !clusterReady {
                let missing = workers.filter { $0.state != .ready }.map { "\($0.name) is \($0.state.rawValue)" }
                fail(r, ClusterError.notReady(missing.isEmpty ? "starting" : missing.joined(separator: ", ")))
                continue
            }
            queue.append(r)
        }
        if !cancelled.isEmpty {
            for r in queue where cancelled.contains(r.id) { r.finished = true }
            queue.removeAll { $0.finished }
            for r in active where cancelled.contains(r.id) { finish(r, reason: nil) }
        }
        while !freeSlots.isEmpty, !queue.isEmpty, clusterReady {
            let r = queue.removeFirst()
            r.slot = freeSlots.removeLast()
            active.append(r)
            metrics.promptTokensTotal += r.tokens.count
            if r.job.maxTokens == 0 { finish(r, reason: .length) }
        }
    }

    /// Ends a request: with a finish reason (sent to the client), or nil when the client went away.
    func finish(_ r: RequestState, reason: FinishReason?) {
        guard !r.finished else { return }
        r.finished = true
        if let reason {
            let rest = r.decoder.finish()
            if !rest.isEmpty { r.continuation.yield(.token(id: -1, text: rest)) }
            r.continuation.yield(.finished(reason, promptTokens: r.job.promptTokens.count, completionTokens: r.generated))
            r.continuation.finish()
        } else {
            r.continuation.finish()
        }
        releaseSlot(r)
    }

    func fail(_ r: RequestState, _ error: Error) {
        metrics.requestsFailed += 1
        if !r.finished {
            r.finished = true
            r.continuation.finish(throwing: error)
        }
        releaseSlot(r)
    }

    func releaseSlot(_ r: RequestState) {
        active.removeAll { $0 === r }
        guard r.slot >= 0 else { return }
        // The release travels the data pipeline behind any frame of this sequence, so a later
        // request in the same slot can never meet this one's cache entries.
        if clusterReady, let out = dataOut {
            try? out.send([WireMessage.sequenceRelease(SequenceRelease(sequenceIDs: [r.slot])).encode()])
        }
        freeSlots.append(r.slot)
        r.slot = -1
    }

    // MARK: Pipeline

    /// Sends frames while stages are free: each frame holds the next tokens of every sequence that
    /// has some to send (one per decoding sequence, a chunk of a prompt being prefilled).
    func schedule() {
        guard clusterReady, let out = dataOut else { return }
        let c = coordinator
        let maxInFlight = c.manifest.framesInFlight ?? max(workers.count, 1)
        while inFlight.count < maxInFlight {
            let ready = active.filter(\.hasTokensToSend)
            guard !ready.isEmpty else { return }
            var budget = c.manifest.batch
            var rows: [(request: RequestState, row: Int)] = []
            frame.sequenceIDs.removeAll(keepingCapacity: true)
            frame.positions.removeAll(keepingCapacity: true)
            frame.needLogits.removeAll(keepingCapacity: true)
            embedScratch.removeAll(keepingCapacity: true)
            let start = roundRobin % ready.count
            roundRobin &+= 1
            for k in 0..<ready.count where budget > 0 {
                let r = ready[(start + k) % ready.count]
                let take = min(budget, r.tokens.count - r.sent)
                for i in r.sent..<(r.sent + take) {
                    embedScratch.append(r.tokens[i])
                    frame.sequenceIDs.append(r.slot)
                    frame.positions.append(Int32(i))
                    let last = i == r.tokens.count - 1
                    frame.needLogits.append(last)
                    if last { rows.append((r, frame.sequenceIDs.count - 1)) }
                }
                r.sent += take
                budget -= take
                if r.sent == r.tokens.count { r.awaitingLogits = true }
            }
            let n = embedScratch.count
            frame.width = c.config.dim
            frame.dtype = c.manifest.activations == .f16 ? .f16 : .f32
            frame.values.removeAll(keepingCapacity: true)
            frame.values.append(contentsOf: repeatElement(0, count: n * c.config.dim))
            let tokens = embedScratch
            do {
                try tokens.withUnsafeBufferPointer { t in
                    try frame.values.withUnsafeMutableBufferPointer { try c.head.embed(t, into: $0.baseAddress!) }
                }
            } catch {
                logger.error("embedding failed: \(error)")
                return
            }
            frameCounter &+= 1
            frame.stepID = UInt64(epoch) << 40 | (frameCounter & 0xFF_FFFF_FFFF)
            codec.encode(frame, into: &encoded)
            do {
                try out.send([encoded])
            } catch {
                logger.error("cannot send a frame to the first worker: \(error)")
                return
            }
            inFlight[frame.stepID] = rows
            peakInFlight = max(peakInFlight, inFlight.count)
            sentAt[frame.stepID] = now
        }
    }

    func handleReturn(_ parts: [[UInt8]]) {
        guard let bytes = parts.last else { return }
        // Decode into the scheduler's reusable frame (moved out so its parts can be borrowed).
        var back = ActivationFrame()
        swap(&back, &returned)
        defer { swap(&back, &returned) }
        let decoded: ActivationCodec.Decoded
        do {
            decoded = try bytes.withUnsafeBytes { try codec.decode($0, into: &back) }
        } catch {
            logger.error("rejected a returning frame: \(error)")
            return
        }
        guard case .activation = decoded else { return }  // sequence releases come back too
        sentAt[back.stepID] = nil
        guard let rows = inFlight.removeValue(forKey: back.stepID) else {
            logger.debug("dropping a returning frame of an earlier epoch")
            return
        }
        let c = coordinator
        // Rows with logits wanted, in frame order; the last stage may have dropped the rest.
        var wanted: [Int] = []
        if back.needLogits.count == back.tokenCount {
            for i in 0..<back.tokenCount where back.needLogits[i] { wanted.append(i) }
        }
        guard wanted.count == rows.count, back.width == c.config.dim else {
            logger.error("a returning frame has \(wanted.count) rows with logits, expected \(rows.count)")
            for (r, _) in rows { fail(r, ClusterError.workerLost("a worker returned a malformed frame")) }
            return
        }
        let n = rows.count
        let dim = c.config.dim, vocab = c.config.vocabSize
        // Gather the wanted rows contiguously (they already are when the last stage trimmed).
        for (k, i) in wanted.enumerated() where k != i {
            for j in 0..<dim { back.values[k * dim + j] = back.values[i * dim + j] }
        }
        if logits.count < n * vocab { logits = [Float](repeating: 0, count: n * vocab) }
        back.values.withUnsafeBufferPointer { h in
            logits.withUnsafeMutableBufferPointer { c.head.logits(hidden: h.baseAddress!, count: n, into: $0.baseAddress!) }
        }
        var produced = 0
        for (k, entry) in rows.enumerated() {
            let r = entry.request
            guard !r.finished else { continue }
            r.awaitingLogits = false
            let token = logits.withUnsafeMutableBufferPointer {
                r.sampler.sample(logits: UnsafeMutableBufferPointer(rebasing: $0[(k * vocab)..<((k + 1) * vocab)]))
            }
            if token == c.tokenizer.eosID {
                finish(r, reason: .stop)
                continue
            }
            r.sampler.accept(token)
            r.tokens.append(token)
            r.generated += 1
            produced += 1
            r.continuation.yield(.token(id: token, text: r.decoder.append(token)))
            if r.generated >= r.job.maxTokens || r.tokens.count >= c.contextLength {
                finish(r, reason: .length)
            }
        }
        metrics.generatedTokensTotal += produced
        recentTokens.append((now, produced))
        recentTokens.removeAll { now - $0.time > 5 }
        let span = max(min(5, now - (recentTokens.first?.time ?? now)), 0.5)
        metrics.tokensPerSecond = Double(recentTokens.reduce(0) { $0 + $1.count }) / span
    }

    func workerStatuses() -> [WorkerStatus] {
        workers.map { w in
            WorkerStatus(name: w.name, state: w.state == .failed ? "failed: \(w.lastFailure ?? "")" : w.state.rawValue,
                         layers: w.layers.map { "\($0.lowerBound)-\($0.upperBound - 1)" }, threads: w.join.map { Int($0.threads) },
                         address: w.join?.dataEndpoint, tokensProcessed: Int(w.tokensProcessed), tokensPerSecond: w.rate,
                         secondsSinceHeartbeat: w.join == nil ? nil : now - w.lastSeen)
        }
    }
}

