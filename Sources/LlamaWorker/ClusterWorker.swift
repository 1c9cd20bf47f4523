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

/// A worker: joins the coordinator, receives a layer range, loads only those layers, and runs
/// every activation frame that arrives on its data input through them, passing the result on.
///
/// The main thread (``run()``) owns the transport, the slice and the frame buffers; a second
/// thread sends heartbeats and watches the coordinator's answers to them.
public final class ClusterWorker: Sendable {
    public let options: WorkerOptions
    /// The advertised data-input endpoint.
    public let dataEndpoint: String

    private let state: Mutex<WorkerState>
    private let shared = WorkerShared()

    /// - Parameter transport: the messaging to use (default: ZeroMQ, with CURVE when
    ///   `options.security` is set).
    public init(options: WorkerOptions, logger: Logger, transport: sending (any WorkerTransport)? = nil) throws {
        try options.validate()
        self.options = options
        let made = try Self.makeState(options: options, logger: logger, transport: transport, shared: shared)
        dataEndpoint = made.transport.dataEndpoint
        state = Mutex(made)
    }

    private static func makeState(options: WorkerOptions, logger: Logger, transport: sending (any WorkerTransport)?,
                                  shared: WorkerShared) throws -> sending WorkerState {
        let t = try transport ?? ZMQWorkerTransport(coordinator: options.coordinator, name: options.name, listen: options.listen,
                                                   advertiseHost: options.advertiseHost, security: options.security,
                                                   maxDataBytes: options.maxFrameBytes) { [logger] refusal in
            logger.warning("refused a CURVE handshake on the data input from \(refusal.address): key \(refusal.key.isEmpty ? "none" : refusal.key) is not the coordinator's or a stage's of this epoch")
        }
        return try WorkerState(options: options, logger: logger, transport: t, shared: shared)
    }

    /// Stops the worker at once (as if its host vanished, for a signal or a test).
    public func stop() { shared.stopping.store(true, ordering: .relaxed) }

    /// Leaves gracefully: tells the coordinator, keeps serving until it has moved this
    /// worker's layers elsewhere (it answers with Shutdown) or `leaveTimeout` passes.
    public func leave() { shared.leaveRequested.store(true, ordering: .relaxed) }

    /// How the loaded layers' KV cache stores keys and values (nil before any are loaded).
    public var kvCache: KVCacheType? {
        KVCacheDType(rawValue: UInt32(clamping: shared.loadedCacheType.load(ordering: .acquiring))).map(KVCacheType.init)
    }

    /// Joins and serves until the coordinator says to shut down, ``stop()``, or a finished ``leave()``.
    public func run() throws {
        let channel = try state.withLock { try $0.transport.makeHeartbeatChannel() }
        let heartbeat = Thread { [shared, options] in
            HeartbeatLoop(shared: shared, channel: channel, options: options).run()
        }
        heartbeat.name = "heartbeat"
        heartbeat.start()
        defer { shared.stopping.store(true, ordering: .relaxed) }
        try state.withLock { try $0.serve() }
    }
}

/// What the main thread and the heartbeat thread share.
final class WorkerShared: Sendable {
    let tokensProcessed = Atomic<UInt64>(0)
    let busyNanos = Atomic<UInt64>(0)
    let stopping = Atomic<Bool>(false)
    let leaveRequested = Atomic<Bool>(false)
    /// The heartbeat thread found the coordinator silent: reconnect and join again.
    let reconnectRequested = Atomic<Bool>(false)
    /// The loaded slice's KV-cache type (KVCacheDType raw value), or -1 before one is loaded.
    let loadedCacheType = Atomic<Int>(-1)
    /// Seconds (in milliseconds) without an answer before reconnecting.
    let heartbeatTimeoutMillis = Atomic<Int>(5000)
    /// Whether a join was sent (the heartbeat thread watches only then).
    let joined = Atomic<Bool>(false)
}

/// The heartbeat thread: a heartbeat every interval; the coordinator answers each one, and
/// a coordinator silent for the heartbeat timeout makes the worker reconnect.
struct HeartbeatLoop {
    let shared: WorkerShared
    let channel: HeartbeatChannel
    let options: WorkerOptions

    func run() {
        var sequence: UInt64 = 0
        var lastAnswer = Date()
        while !shared.stopping.load(ordering: .relaxed) {
            sequence += 1
            let hb = Heartbeat(sequence: sequence, unixTimeNanos: UInt64(Date().timeIntervalSince1970 * 1e9),
                               tokensProcessed: shared.tokensProcessed.load(ordering: .relaxed),
                               busySeconds: Double(shared.busyNanos.load(ordering: .relaxed)) * 1e-9)
            // One heartbeat per interval: the answer is awaited for the rest of the interval,
            // never used as the cue for the next heartbeat (that would be a ping-pong storm).
            let next = Date().addingTimeInterval(options.heartbeatInterval)
            do {
                try channel.send(WireMessage.heartbeat(hb).encode())
                var left = next.timeIntervalSinceNow
                while left > 0, !shared.stopping.load(ordering: .relaxed) {
                    if !(try channel.receive(timeout: left)).isEmpty { lastAnswer = Date() }
                    left = next.timeIntervalSinceNow
                }
            } catch {
                usleep(useconds_t(options.heartbeatInterval * 1e6))
            }
            let timeout = Double(shared.heartbeatTimeoutMillis.load(ordering: .relaxed)) / 1000
            if shared.joined.load(ordering: .relaxed), Date().timeIntervalSince(lastAnswer) > timeout {
                // The coordinator is gone or cut off: start over with fresh connections.
                try? channel.reconnect()
                shared.reconnectRequested.store(true, ordering: .relaxed)
                lastAnswer = Date()
            }
        }
    }
}

extension KVCacheType {
    /// The type a shard assignment names.
    init(_ wire: KVCacheDType) { self = wire == .f16 ? .f16 : .f32 }
    /// How a shard assignment names this type.
    public var wire: KVCacheDType { self == .f16 ? .f16 : .f32 }
}
