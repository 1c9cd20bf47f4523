import ClusterTransport
import ClusterWire
import Foundation
import GGUF
import LlamaKernels
import LlamaModel
import Logging

/// The worker's main-thread state: its transport, assignment and layers, and the loop that
/// serves control messages and frames.
final class WorkerState {
    let options: WorkerOptions
    let logger: Logger
    let transport: any WorkerTransport
    let shared: WorkerShared
    let localModel: GGUFFile?
    let localFingerprint: String
    var pool: ThreadPool
    var slice: LayerSlice?
    /// The mapped file the slice's weights point into (kept alive with it).
    var modelFile: GGUFFile?
    var assignment: ShardAssignment?
    var epoch: UInt32 = 0
    var isLastStage = false
    var lastJoin = Date.distantPast
    var leavingSince: Date?
    /// Step ids processed in this epoch, newest last (a duplicated frame is not applied twice).
    var recentSteps: [UInt64] = []
    var calibration: CalibrationResult?
    let frames = StageFrames()

    init(options: WorkerOptions, logger: Logger, transport: any WorkerTransport, shared: WorkerShared) throws {
        self.options = options
        self.logger = logger
        self.transport = transport
        self.shared = shared
        shared.heartbeatTimeoutMillis.store(Int(options.heartbeatTimeout * 1000), ordering: .relaxed)
        if let path = options.modelPath {
            let file = try GGUFFile(path: path)
            localModel = file
            localFingerprint = file.fingerprint
        } else {
            localModel = nil
            localFingerprint = ""
        }
        pool = ThreadPool(threadCount: options.threads)
    }

    // MARK: - Loop

    func serve() throws {
        try sendJoin()
        while !shared.stopping.load(ordering: .relaxed) {
            if shared.reconnectRequested.exchange(false, ordering: .relaxed) {
                logger.warning("no answer from the coordinator for \(Double(shared.heartbeatTimeoutMillis.load(ordering: .relaxed)) / 1000) s: reconnecting")
                try transport.reconnectControl()
                try sendJoin()
            }
            if shared.leaveRequested.load(ordering: .relaxed), leavingSince == nil {
                if assignment == nil {
                    logger.info("leaving: no layers to hand over")
                    return
                }
                leavingSince = Date()
                logger.info("leaving: asking the coordinator to move layers \(slice.map { "\($0.layers)" } ?? "-") elsewhere")
                try send(.shutdown(Shutdown(reason: "leaving")))
            }
            if let since = leavingSince, Date().timeIntervalSince(since) > options.leaveTimeout {
                logger.warning("the coordinator did not release this worker within \(options.leaveTimeout) s; leaving anyway")
                return
            }
            var keepGoing = true
            try transport.poll(timeout: 0.1) { event in
                guard keepGoing else { return }
                switch event {
                case .control(let bytes): keepGoing = try handleControl(bytes)
                case .data(let bytes): handleData(bytes)
                }
            }
            if !keepGoing { return }
        }
    }

    /// Sends on the control channel. A coordinator that cannot be reached (the send gave up)
    /// is not an error of this worker: it logs, reconnects, and the next join or heartbeat
    /// tries again.
    func send(_ message: WireMessage) throws {
        do {
            try transport.sendControl(message.encode())
        } catch let error as ZMQError where error.errno == EAGAIN {
            logger.warning("the coordinator is not reachable (\(message.kind) not sent): reconnecting")
            shared.reconnectRequested.store(true, ordering: .relaxed)
        }
    }

    func sendJoin() throws {
        lastJoin = Date()
        let held = slice.map { UInt32($0.layers.lo)..<UInt32($0.layers.hi) }
        logger.info("joining \(options.coordinator) as \(options.name) (data input \(transport.dataEndpoint), \(options.threads) threads\(held.map { ", holding layers \($0.lowerBound)-\($0.upperBound - 1)" } ?? ""))")
        try send(.join(Join(workerName: options.name, threads: UInt32(options.threads),
                            memoryBudgetBytes: UInt64(max(options.memoryBudget, 0)), cpuFeatures: SystemInfo.cpuFeatures,
                            protocolVersion: WireProtocol.version, hasModelFile: localModel != nil,
                            modelFingerprint: localFingerprint, dataEndpoint: transport.dataEndpoint, heldLayers: held,
                            layerDecodeSeconds: calibration?.layerDecodeSeconds ?? 0,
                            layerPrefillSeconds: calibration?.layerPrefillSeconds ?? 0)))
        shared.joined.store(true, ordering: .relaxed)
    }

    // MARK: - Control

    /// Handles one control message; returns false when the worker should stop.
    func handleControl(_ bytes: UnsafeRawBufferPointer) throws -> Bool {
        let message: WireMessage
        do {
            message = try WireMessage.decode(bytes)
        } catch {
            logger.error("rejected a control frame from the coordinator: \(error)")
            return true
        }
        switch message {
        case .shardAssignment(let a):
            do {
                try apply(a)
            } catch {
                logger.error("cannot take layers \(a.layerBegin)..<\(a.layerEnd): \(error)")
                try send(.error(ErrorReport(code: .invalidAssignment, message: "\(options.name): \(error)")))
            }
        case .sequenceRelease(let r):
            for id in r.sequenceIDs { slice?.release(sequence: id) }
        case .shutdown(let s):
            logger.info("coordinator asked to shut down: \(s.reason)")
            return false
        case .calibrationRequest(let r):
            do {
                let result = try Calibration.measure(r, threads: options.threads, pool: pool, directory: options.cacheDirectory)
                calibration = result
                try send(.calibrationResult(result))
            } catch {
                try send(.error(ErrorReport(code: .internal, message: "\(options.name): calibration failed: \(error)")))
            }
        case .error(let e):
            if e.code == .notJoined {
                // The coordinator restarted or forgot us: join again (unless our join is on its way:
                // a heartbeat can overtake it at start-up).
                if Date().timeIntervalSince(lastJoin) > 2 { try sendJoin() }
            } else {
                logger.error("coordinator reported: \(e.message)")
                if e.code == .modelMismatch || e.code == .protocolVersion { throw WorkerError.rejected(e.message) }
            }
        default:
            logger.warning("ignoring unexpected \(message.kind) message on the control channel")
        }
        return true
    }

    func apply(_ a: ShardAssignment) throws {
        // The previous stage connects as soon as it has its own assignment: let it in before
        // this worker spends time loading (or fetching) weights.
        transport.allowDataPeers(Set(a.inputPeerKeys))
        let layers = LayerRange(Int(a.layerBegin), Int(a.layerEnd))
        let needsLoad = slice == nil || slice!.layers != layers || assignment?.modelFingerprint != a.modelFingerprint
            || slice!.cache.maxSequences != Int(a.maxSequences) || slice!.cache.contextLength != Int(a.contextLength)
            || slice!.cache.type != KVCacheType(a.kvCacheDType) || slice!.maxBatch < Int(a.maxBatch)
        if needsLoad {
            slice = nil
            modelFile = nil
            let file = try obtainWeights(a, layers: layers)
            let config = try LlamaConfig(gguf: file)
            let start = Date()
            slice = try LayerSlice(file: file, config: config, layers: layers, maxSequences: Int(a.maxSequences),
                                   contextLength: Int(a.contextLength), maxBatch: Int(max(a.maxBatch, 1)),
                                   kvCache: KVCacheType(a.kvCacheDType), pool: pool)
            modelFile = file
            shared.loadedCacheType.store(Int(a.kvCacheDType.rawValue), ordering: .releasing)
            logger.info("loaded layers \(layers) (\(slice!.weightBytes / 1_048_576) MiB of weights) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        } else {
            // A new epoch: frames of the old one are dropped, and so are the caches they filled.
            slice?.cache.releaseAll()
        }
        assignment = a
        epoch = a.epoch
        recentSteps.removeAll()
        isLastStage = a.layerEnd == a.hyperparameters?.layerCount
        if a.heartbeatTimeout > 0 {
            shared.heartbeatTimeoutMillis.store(Int(a.heartbeatTimeout * 1000), ordering: .relaxed)
        }
        // A wildcard host means "the coordinator's host".
        var next = a.output.address
        if let (host, port) = parseTCPEndpoint(next), host == "*" || host == "0.0.0.0",
           let (coordHost, _) = parseTCPEndpoint(options.coordinator) {
            next = "tcp://\(coordHost):\(port)"
        }
        try transport.connectOutput(PeerEndpoint(address: next, serverKey: a.outputServerKey.isEmpty ? nil : a.outputServerKey))
        try send(.ready(Ready(layerBegin: a.layerBegin, layerEnd: a.layerEnd,
                              residentBytes: UInt64(SystemInfo.residentMemory), epoch: epoch)))
        logger.info("ready: layers \(layers), epoch \(epoch), output \(next)")
    }

    /// The model file holding the assignment's layers: the local copy, or the cached (or now
    /// streamed) tensors.
    private func obtainWeights(_ a: ShardAssignment, layers: LayerRange) throws -> GGUFFile {
        if let local = localModel {
            guard localFingerprint == a.modelFingerprint else {
                throw WorkerError.rejected("the local model \(options.modelPath ?? "") (fingerprint \(localFingerprint)) is not the coordinator's (\(a.modelFingerprint))")
            }
            return local
        }
        return try WeightCache(directory: options.cacheDirectory, logger: logger, memoryBudget: options.memoryBudget)
            .obtain(assignment: a, workerName: options.name) { request in try self.requestChunk(request) }
    }

    /// Sends a weight request and waits for its chunk (other traffic meanwhile is dropped:
    /// no frame flows before this worker is ready).
    private func requestChunk(_ request: WeightRequest) throws -> TensorChunk {
        try send(.weightRequest(request))
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !shared.stopping.load(ordering: .relaxed) {
            var answer: Result<TensorChunk, Error>?
            try transport.poll(timeout: 0.2) { event in
                guard answer == nil, case .control(let bytes) = event else { return }
                switch try? WireMessage.decode(bytes) {
                case .tensorChunk(let c)?: answer = .success(c)
                case .error(let e)?: answer = .failure(WorkerError.weights(e.message))
                case .shutdown(let s)?: answer = .failure(WorkerError.rejected("shut down while loading: \(s.reason)"))
                default: break
                }
            }
            if let answer { return try answer.get() }
        }
        throw WorkerError.weights("no answer from the coordinator for tensor \(request.tensorName) at offset \(request.offset)")
    }
}
