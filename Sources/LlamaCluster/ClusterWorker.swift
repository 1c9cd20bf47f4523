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
import Logging
import Synchronization

/// How a worker is started (`llama-worker join`).
public struct WorkerOptions: Sendable {
    /// The coordinator's control endpoint, "tcp://HOST:PORT".
    public var coordinator: String
    public var name: String
    public var threads: Int
    /// A local copy of the model; without it the coordinator streams this worker's tensors.
    public var modelPath: String?
    /// Where streamed tensors are kept for the next start.
    public var cacheDirectory: String
    /// Memory this worker offers, reported to the coordinator to balance layers.
    public var memoryBudget: Int
    /// Where the data input binds ("tcp://0.0.0.0:0" picks a free port).
    public var listen: String
    /// Host other stages use to reach this worker (default: the local address that routes to the coordinator).
    public var advertiseHost: String?
    public var heartbeatInterval: Double

    public init(coordinator: String, name: String = SystemInfo.hostName, threads: Int = defaultThreadCount,
                modelPath: String? = nil, cacheDirectory: String = WorkerOptions.defaultCacheDirectory,
                memoryBudget: Int = SystemInfo.availableMemory, listen: String = "tcp://0.0.0.0:0",
                advertiseHost: String? = nil, heartbeatInterval: Double = 0.5) {
        self.coordinator = coordinator
        self.name = name
        self.threads = threads
        self.modelPath = modelPath
        self.cacheDirectory = cacheDirectory
        self.memoryBudget = memoryBudget
        self.listen = listen
        self.advertiseHost = advertiseHost
        self.heartbeatInterval = heartbeatInterval
    }

    public static var defaultCacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/llamacluster" }
        return (env["HOME"] ?? "/tmp") + "/.cache/llamacluster"
    }
}

public enum WorkerError: Error, CustomStringConvertible {
    case badOption(String)
    case rejected(String)
    case weights(String)

    public var description: String {
        switch self {
        case .badOption(let s): return s
        case .rejected(let s): return "the coordinator rejected this worker: \(s)"
        case .weights(let s): return "cannot obtain this worker's weights: \(s)"
        }
    }
}

/// A worker: joins the coordinator, receives a layer range, loads only those layers, and runs
/// every activation frame that arrives on its data input through them, passing the result on.
public final class ClusterWorker: @unchecked Sendable {
    public let options: WorkerOptions
    private let logger: Logger
    private let context: ZMQContext
    private let control: ZMQSocket
    private let input: ZMQSocket
    private var output: ZMQSocket?
    private var outputAddress: String?
    /// The advertised data-input endpoint.
    public let dataEndpoint: String

    private let localModel: GGUFFile?
    private let localFingerprint: String
    private var modelFile: GGUFFile?
    private var slice: LayerSlice?
    private var pool: ThreadPool
    private var assignment: ShardAssignment?
    private var epoch: UInt32 = 0
    private var activationType: ActivationDType = .f32
    private var isLastStage = false

    // Statistics shared with the heartbeat thread.
    private let tokensProcessed = Atomic<UInt64>(0)
    /// The loaded slice's KV-cache type (KVCacheDType raw value), or -1 before one is loaded.
    private let loadedCacheType = Atomic<Int>(-1)
    private let busyNanos = Atomic<UInt64>(0)
    private let stopping = Atomic<Bool>(false)
    private let heartbeatSequence = Atomic<UInt64>(0)

    private let codec = ActivationCodec()
    private var frame = ActivationFrame()
    private var encoded: [UInt8] = []

    public init(options: WorkerOptions, logger: Logger) throws {
        guard let (host, port) = parseTCPEndpoint(options.coordinator) else {
            throw WorkerError.badOption("--coordinator \(options.coordinator.debugDescription) is not an address like tcp://HOST:PORT")
        }
        guard options.threads > 0 else { throw WorkerError.badOption("--threads must be at least 1") }
        guard !options.name.isEmpty, !options.name.contains("#") else {
            throw WorkerError.badOption("--name \(options.name.debugDescription) must be non-empty without '#'")
        }
        self.options = options
        self.logger = logger
        if let path = options.modelPath {
            let file = try GGUFFile(path: path)
            localModel = file
            localFingerprint = modelFingerprint(file)
        } else {
            localModel = nil
            localFingerprint = ""
        }
        pool = ThreadPool(threadCount: options.threads)
        context = try ZMQContext()
        control = try context.socket(.dealer)
        try control.set(.routingID(Array(options.name.utf8)))
        try control.set(.linger(milliseconds: 0))
        try control.connect(options.coordinator)

        input = try context.socket(.pull)
        try input.set(.linger(milliseconds: 0))
        var listen = options.listen
        if listen.hasSuffix(":0") { listen = String(listen.dropLast(2)) + ":*" }
        try input.bind(listen)
        guard let bound = parseTCPEndpoint(try input.lastEndpoint) else {
            throw WorkerError.badOption("--listen \(options.listen.debugDescription) is not a TCP address")
        }
        let advertise = options.advertiseHost
            ?? (bound.host != "0.0.0.0" && bound.host != "*" ? bound.host : SystemInfo.localAddress(toward: host, port: port))
            ?? "127.0.0.1"
        dataEndpoint = "tcp://\(advertise):\(bound.port)"
    }

    /// Stops the worker's loop from another thread (or a signal handler's thread).
    public func stop() { stopping.store(true, ordering: .relaxed) }

    /// How the loaded layers' KV cache stores keys and values (nil before any are loaded).
    public var kvCache: KVCacheType? {
        KVCacheDType(rawValue: UInt32(clamping: loadedCacheType.load(ordering: .acquiring))).map(KVCacheType.init)
    }

    /// Joins and serves until the coordinator says to shut down or `stop()` is called.
    public func run() throws {
        let heartbeat = Thread { [self] in heartbeatLoop() }
        heartbeat.name = "heartbeat"
        heartbeat.start()
        defer { stopping.store(true, ordering: .relaxed) }

        try sendJoin()
        let poller = ZMQPoller()
        let controlIndex = poller.register(control)
        let inputIndex = poller.register(input)
        while !stopping.load(ordering: .relaxed) {
            guard try poller.poll(timeout: .milliseconds(100)) > 0 else { continue }
            if poller.isReadable(controlIndex) {
                while let parts = try control.receive(timeout: .zero) {
                    if try !handleControl(parts) { return }
                }
            }
            if poller.isReadable(inputIndex) {
                while let parts = try input.receive(timeout: .zero) { handleData(parts) }
            }
        }
    }

    private func send(_ message: WireMessage) throws {
        try control.send([message.encode()])
    }

    private var lastJoin = Date.distantPast

    private func sendJoin() throws {
        lastJoin = Date()
        logger.info("joining \(options.coordinator) as \(options.name) (data input \(dataEndpoint), \(options.threads) threads)")
        try send(.join(Join(workerName: options.name, threads: UInt32(options.threads),
                            memoryBudgetBytes: UInt64(max(options.memoryBudget, 0)), cpuFeatures: SystemInfo.cpuFeatures,
                            protocolVersion: WireProtocol.version, hasModelFile: localModel != nil,
                            modelFingerprint: localFingerprint, dataEndpoint: dataEndpoint)))
    }

    // MARK: - Control

    /// Handles one control message; returns false when the worker should stop.
    private func handleControl(_ parts: [[UInt8]]) throws -> Bool {
        guard let bytes = parts.last else { return true }
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

    private func apply(_ a: ShardAssignment) throws {
        let layers = LayerRange(Int(a.layerBegin), Int(a.layerEnd))
        let needsLoad = slice == nil || slice!.layers != layers || assignment?.modelFingerprint != a.modelFingerprint
            || slice!.cache.maxSequences != Int(a.maxSequences) || slice!.cache.contextLength != Int(a.contextLength)
            || slice!.cache.type != KVCacheType(a.kvCacheDType)
        if needsLoad {
            slice = nil
            let file: GGUFFile
            if let local = localModel {
                guard localFingerprint == a.modelFingerprint else {
                    throw WorkerError.rejected("the local model \(options.modelPath ?? "") (fingerprint \(localFingerprint)) is not the coordinator's (\(a.modelFingerprint))")
                }
                file = local
            } else {
                file = try WeightCache(directory: options.cacheDirectory, logger: logger)
                    .obtain(assignment: a, workerName: options.name) { request in
                        try self.requestChunk(request)
                    }
            }
            let config = try LlamaConfig(gguf: file)
            let start = Date()
            slice = try LayerSlice(file: file, config: config, layers: layers, maxSequences: Int(a.maxSequences),
                                   contextLength: Int(a.contextLength), maxBatch: Int(max(a.maxBatch, 1)),
                                   kvCache: KVCacheType(a.kvCacheDType), pool: pool)
            modelFile = file
            loadedCacheType.store(Int(a.kvCacheDType.rawValue), ordering: .releasing)
            logger.info("loaded layers \(layers) (\(slice!.weightBytes / 1_048_576) MiB of weights) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        } else {
            slice?.cache.releaseAll()
        }
        assignment = a
        epoch = a.epoch
        activationType = a.activationDType
        isLastStage = a.layerEnd == a.hyperparameters?.layerCount
        // (Re)connect the output to the next stage. A wildcard host means "the coordinator's host".
        var next = a.output.address
        if let (host, port) = parseTCPEndpoint(next), host == "*" || host == "0.0.0.0",
           let (coordHost, _) = parseTCPEndpoint(options.coordinator) {
            next = "tcp://\(coordHost):\(port)"
        }
        if next != outputAddress {
            output = nil
            let socket = try context.socket(.push)
            try socket.set(.linger(milliseconds: 0))
            try socket.connect(next)
            output = socket
            outputAddress = next
        }
        try send(.ready(Ready(layerBegin: a.layerBegin, layerEnd: a.layerEnd,
                              residentBytes: UInt64(SystemInfo.residentMemory), epoch: epoch)))
        logger.info("ready: layers \(layers), epoch \(epoch), output \(next)")
    }

    /// Sends a weight request and waits for its chunk (other control traffic is set aside).
    private func requestChunk(_ request: WeightRequest) throws -> TensorChunk {
        try send(.weightRequest(request))
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !stopping.load(ordering: .relaxed) {
            guard let parts = try control.receive(timeout: .milliseconds(200)), let bytes = parts.last else { continue }
            switch try WireMessage.decode(bytes) {
            case .tensorChunk(let c): return c
            case .error(let e): throw WorkerError.weights(e.message)
            case .shutdown(let s): throw WorkerError.rejected("shut down while loading: \(s.reason)")
            default: continue
            }
        }
        throw WorkerError.weights("no answer from the coordinator for tensor \(request.tensorName) at offset \(request.offset)")
    }

    // MARK: - Data

    private func handleData(_ parts: [[UInt8]]) {
        guard let bytes = parts.last else { return }
        let decoded: ActivationCodec.Decoded
        do {
            decoded = try bytes.withUnsafeBytes { try codec.decode($0, into: &frame) }
        } catch {
            logger.error("rejected a data frame: \(error)")
            return
        }
        switch decoded {
        case .activation:
            process()
        case .message(let m):
            if case .sequenceRelease(let r) = m {
                // Releases travel through the pipeline in order with the frames, then on.
                for id in r.sequenceIDs { slice?.release(sequence: id) }
                forward(m)
            } else {
                logger.warning("ignoring unexpected \(m.kind) message on the data input")
            }
        }
    }

    private func process() {
        guard let slice else {
            logger.warning("dropping a frame: no layers assigned yet")
            return
        }
        guard UInt32(truncatingIfNeeded: frame.stepID >> 40) == epoch else {
            logger.debug("dropping a frame of an earlier epoch")
            return
        }
        guard frame.width == slice.config.dim else {
            logger.error("rejected a frame of width \(frame.width); the model's width is \(slice.config.dim)")
            return
        }
        guard frame.needLogits.isEmpty || frame.needLogits.count == frame.tokenCount else {
            logger.error("rejected a frame with \(frame.needLogits.count) logits flags for \(frame.tokenCount) tokens")
            return
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        // Work on a local frame: a stored property's parts cannot be borrowed separately.
        var f = ActivationFrame()
        swap(&f, &frame)
        defer { swap(&f, &frame) }
        do {
            let n = f.tokenCount
            try f.values.withUnsafeMutableBufferPointer { v in
                try f.sequenceIDs.withUnsafeBufferPointer { ids in
                    try f.positions.withUnsafeBufferPointer { pos in
                        try slice.forward(hidden: v.baseAddress!, count: n, sequenceIDs: ids, positions: pos)
                    }
                }
            }
        } catch {
            logger.error("rejected a frame: \(error)")
            return
        }
        tokensProcessed.add(UInt64(f.tokenCount), ordering: .relaxed)
        if isLastStage, !f.needLogits.isEmpty, f.needLogits.contains(false) {
            f.retainTokensNeedingLogits()
        }
        f.dtype = activationType
        codec.encode(f, into: &encoded)
        busyNanos.add(DispatchTime.now().uptimeNanoseconds - t0, ordering: .relaxed)
        logger.trace("frame \(f.stepID & 0xFF_FFFF_FFFF): \(f.tokenCount) tokens on to \(outputAddress ?? "nowhere")")
        do {
            try output?.send([encoded])
        } catch {
            logger.error("cannot pass a frame on: \(error)")
        }
    }

    private func forward(_ message: WireMessage) {
        do { try output?.send([message.encode()]) } catch { logger.error("cannot pass a message on: \(error)") }
    }

    // MARK: - Heartbeat

    private func heartbeatLoop() {
        do {
            let socket = try context.socket(.dealer)
            try socket.set(.routingID(Array((options.name + "#hb").utf8)))
            try socket.set(.linger(milliseconds: 0))
            try socket.connect(options.coordinator)
            while !stopping.load(ordering: .relaxed) {
                let hb = Heartbeat(sequence: heartbeatSequence.add(1, ordering: .relaxed).newValue,
                                   unixTimeNanos: UInt64(Date().timeIntervalSince1970 * 1e9),
                                   tokensProcessed: tokensProcessed.load(ordering: .relaxed),
                                   busySeconds: Double(busyNanos.load(ordering: .relaxed)) * 1e-9)
                _ = try socket.send([WireMessage.heartbeat(hb).encode()], timeout: .milliseconds(100))
                // Drain anything the coordinator sends back on this socket.
                while try socket.receive(timeout: .zero) != nil {}
                usleep(useconds_t(options.heartbeatInterval * 1e6))
            }
        } catch {
            logger.error("heartbeat stopped: \(error)")
        }
    }
}

extension ActivationFrame {
    /// Drops the tokens whose `needLogits` flag is false (the last stage sends back only those).
    mutating func retainTokensNeedingLogits() {
        // A frame carries at least one token: with none wanted, the last one stands in (flag false).
        if !needLogits.contains(true) {
            let last = tokenCount - 1
            for j in 0..<width { values[j] = values[last * width + j] }
            sequenceIDs = [sequenceIDs[last]]
            positions = [positions[last]]
            needLogits = [false]
            values.removeLast(values.count - width)
            return
        }
        var w = 0
        for r in 0..<tokenCount where needLogits[r] {
            if w != r {
                for j in 0..<width { values[w * width + j] = values[r * width + j] }
                sequenceIDs[w] = sequenceIDs[r]
                positions[w] = positions[r]
            }
            needLogits[w] = true
            w += 1
        }
        sequenceIDs.removeLast(tokenCount - w)
        positions.removeLast(positions.count - w)
        needLogits.removeLast(needLogits.count - w)
        values.removeLast(values.count - w * width)
    }
}

extension KVCacheType {
    /// The type a shard assignment names.
    init(_ wire: KVCacheDType) { self = wire == .f16 ? .f16 : .f32 }
    /// How a shard assignment names this type.
    var wire: KVCacheDType { self == .f16 ? .f16 : .f32 }
}
