import Foundation
import Synchronization
import Logging

/// CURVE settings of one node: its key pair and whom it lets in.
public struct TransportSecurity: Sendable {
    public var keys: CurveKeyPair
    /// Coordinator: the workers' keys allowed on the control socket. Worker: unused.
    public var controlPeers: Set<String>
    /// Worker: the coordinator's public key (its control socket's server key).
    public var coordinatorKey: String?

    public init(keys: CurveKeyPair, controlPeers: Set<String> = [], coordinatorKey: String? = nil) {
        self.keys = keys
        self.controlPeers = controlPeers
        self.coordinatorKey = coordinatorKey
    }
}

/// Largest control message a worker sends (joins, heartbeats, weight requests): 1 MiB.
public let maximumWorkerControlBytes: Int64 = 1 << 20
/// Largest control message a coordinator sends (a tensor chunk of 16 MiB with its header).
public let maximumCoordinatorControlBytes: Int64 = 24 << 20

extension ZMQSocket {
    /// Makes the socket a CURVE server of `domain` with `keys` (ZAP decides who gets in).
    func serveCurve(_ keys: CurveKeyPair, domain: String) throws {
        // The context's ZAP handler is bound before any server socket, so every handshake is
        // put to it (without one, CURVE would let in anyone who knows the server key).
        try set(.zapDomain(domain))
        try set(.curveServer(true))
        try set(.curvePublicKey(keys.publicKey))
        try set(.curveSecretKey(keys.secretKey))
    }

    /// Makes the socket a CURVE client proving `keys` to a server holding `serverKey`.
    func connectCurve(_ keys: CurveKeyPair, serverKey: String) throws {
        try set(.curveServerKey(serverKey))
        try set(.curvePublicKey(keys.publicKey))
        try set(.curveSecretKey(keys.secretKey))
    }
}

// MARK: - Coordinator

/// The coordinator's ZeroMQ sockets: the control ROUTER workers connect to, the data PULL
/// the last stage returns frames to, a PUSH to the first stage, and an in-process pair to
/// wake the loop. With security, every socket speaks CURVE and the context's ZAP handler
/// admits only the manifest's worker keys (control) and the current epoch's workers (data).
public final class ZMQCoordinatorTransport: CoordinatorTransport {
    public let returnEndpoint: String
    public let zap: ZAPHandler?
    private let context: ZMQContext
    private let security: TransportSecurity?
    private let control: ZMQSocket
    private let dataIn: ZMQSocket
    private var dataOut: ZMQSocket?
    private var dataOutEndpoint: PeerEndpoint?
    private let wakeReceiver: ZMQSocket
    public let waker: @Sendable () -> Void
    private let poller = ZMQPoller()
    private let maxDataBytes: Int64
    private var parts: [[UInt8]] = []
    private var properties = ZMQMessageProperties()

    /// - Parameters:
    ///   - controlAddress: where workers connect, "tcp://HOST:PORT"; the data return binds a
    ///     free port on the same host.
    ///   - maxDataBytes: the largest frame a stage may send back (ZMQ_MAXMSGSIZE).
    public init(controlAddress: String, security: TransportSecurity?, maxDataBytes: Int64,
                onRefusal: @escaping @Sendable (ZAPHandler.Refusal) -> Void = { _ in }) throws {
        guard let (host, _) = parseTCPEndpoint(controlAddress) else {
            throw ZMQError(function: "bind", errno: EINVAL, detail: "\(controlAddress) is not tcp://HOST:PORT")
        }
        context = try ZMQContext()
        self.security = security
        self.maxDataBytes = maxDataBytes
        if let security {
            let zap = try ZAPHandler(context: context, onRefusal: onRefusal)
            zap.allow(security.controlPeers, domain: "control")
            zap.allow([], domain: "data")
            self.zap = zap
        } else {
            zap = nil
        }
        control = try context.socket(.router)
        try control.set(.routerHandover(true))
        try control.set(.routerMandatory(false))
        try control.set(.maxMessageSize(maximumWorkerControlBytes))
        if let security { try control.serveCurve(security.keys, domain: "control") }
        try control.bind(controlAddress)

        dataIn = try context.socket(.pull)
        try dataIn.set(.maxMessageSize(maxDataBytes))
        if let security { try dataIn.serveCurve(security.keys, domain: "data") }
        try dataIn.bind("tcp://\(host):*")
        let bound = parseTCPEndpoint(try dataIn.lastEndpoint)!
        returnEndpoint = "tcp://\(host == "0.0.0.0" ? "*" : host):\(bound.port)"

        let wakeAddress = "inproc://coordinator-wake-\(UUID().uuidString)"
        wakeReceiver = try context.socket(.pull)
        try wakeReceiver.bind(wakeAddress)
        let sender = try context.socket(.push)
        try sender.connect(wakeAddress)
        let box = WakeSocket(sender)
        waker = { box.ring() }
        poller.register(control)
        poller.register(dataIn)
        poller.register(wakeReceiver)
    }

    deinit { zap?.stop() }

    public func poll(timeout: Double, _ handle: (CoordinatorEvent) throws -> Void) throws {
        _ = try poller.poll(timeout: .milliseconds(Int(max(0, timeout) * 1000)))
        if poller.isReadable(2) { while try wakeReceiver.receive(timeout: .zero) != nil {} }
        while try control.receive(into: &parts, properties: &properties, timeout: .zero) {
            guard parts.count >= 2 else { continue }
            let identity = parts[0]
            try parts[parts.count - 1].withUnsafeBytes { payload in
                try handle(.control(ControlMessage(identity: identity, authenticatedKey: properties.userID,
                                                   peerAddress: properties.peerAddress, payload: payload)))
            }
        }
        while try dataIn.receive(into: &parts, timeout: .zero) {
            guard let last = parts.last else { continue }
            try last.withUnsafeBytes { try handle(.data($0)) }
        }
    }

    public func sendControl(_ payload: [UInt8], to identity: [UInt8]) throws {
        try control.send([identity, payload])
    }

    public func connectFirstStage(_ endpoint: PeerEndpoint?) throws {
        guard endpoint != dataOutEndpoint else { return }
        dataOut = nil
        dataOutEndpoint = nil
        guard let endpoint else { return }
        let s = try context.socket(.push)
        // A next stage that is gone (or refuses the handshake) must not block this thread for
        // good: the send gives up, the frame is lost, and the coordinator's frame timeout or
        // the next epoch redoes it.
        try s.set(.sendTimeout(milliseconds: 2000))
        if let security, let key = endpoint.serverKey {
            // Queue frames only on a connection whose handshake passed: a refused one would
            // swallow them. A send with none gives up after 2 s and connects again.
            try s.set(.immediate(true))
            try s.connectCurve(security.keys, serverKey: key)
        }
        try s.connect(endpoint.address)
        dataOut = s
        dataOutEndpoint = endpoint
    }

    public func sendData(_ payload: [UInt8]) throws {
        guard let dataOut else { throw ZMQError(function: "zmq_send", errno: ENOTCONN, detail: "no first stage") }
        try dataOut.send([payload])
    }

    public func allowDataPeers(_ keys: Set<String>) { zap?.allow(keys, domain: "data") }

}

/// The sending end of a coordinator's wake-up pair, usable from any thread.
final class WakeSocket: Sendable {
    private let socket: Mutex<ZMQSocket>
    init(_ socket: sending ZMQSocket) { self.socket = Mutex(socket) }
    func ring() { socket.withLock { _ = try? $0.send([[1]], timeout: .zero) } }
}

// MARK: - Worker

/// A worker's ZeroMQ sockets: a DEALER to the coordinator's control socket (routing id = the
/// worker's name), its data input PULL, and a PUSH to the next stage. With security the
/// input is a CURVE server that the ZAP handler opens only to the coordinator and the
/// previous stage of the current epoch.
public final class ZMQWorkerTransport: WorkerTransport {
    public let dataEndpoint: String
    public let zap: ZAPHandler?
    private let context: ZMQContext
    private let coordinator: String
    /// The control routing id: the name, with security `name@tag` (``CurveKeyPair/routingTag``).
    private let identity: String
    private let security: TransportSecurity?
    private var control: ZMQSocket
    private let input: ZMQSocket
    private var output: ZMQSocket?
    private var outputEndpoint: PeerEndpoint?
    private var poller = ZMQPoller()
    private var parts: [[UInt8]] = []

    /// - Parameters:
    ///   - listen: where the data input binds ("tcp://0.0.0.0:0": any free port).
    ///   - advertiseHost: the host other stages use to reach the input (nil: the local address
    ///     that routes to the coordinator).
    ///   - onRefusal: called (on the ZAP thread) for every refused handshake on the data input.
    public init(coordinator: String, name: String, listen: String, advertiseHost: String?,
                security: TransportSecurity?, maxDataBytes: Int64,
                onRefusal: @escaping @Sendable (ZAPHandler.Refusal) -> Void = { _ in }) throws {
        guard let (coordHost, coordPort) = parseTCPEndpoint(coordinator) else {
            throw ZMQError(function: "connect", errno: EINVAL, detail: "\(coordinator) is not tcp://HOST:PORT")
        }
        if security != nil && security?.coordinatorKey == nil {
            throw SecurityError("a worker with a key needs the coordinator's public key")
        }
        context = try ZMQContext()
        self.coordinator = coordinator
        identity = security.map { "\(name)@\($0.keys.routingTag)" } ?? name
        self.security = security
        if let security {
            let zap = try ZAPHandler(context: context, onRefusal: onRefusal)
            zap.allow([security.coordinatorKey!], domain: "data")
            self.zap = zap
        } else {
            zap = nil
        }
        control = try Self.makeControl(context, coordinator: coordinator, identity: identity, security: security)
        input = try context.socket(.pull)
        try input.set(.maxMessageSize(maxDataBytes))
        if let security { try input.serveCurve(security.keys, domain: "data") }
        var bindAddress = listen
        if bindAddress.hasSuffix(":0") { bindAddress = String(bindAddress.dropLast(2)) + ":*" }
        try input.bind(bindAddress)
        guard let bound = parseTCPEndpoint(try input.lastEndpoint) else {
            throw ZMQError(function: "bind", errno: EINVAL, detail: "\(listen) is not a TCP address")
        }
        let host = advertiseHost
            ?? (bound.host != "0.0.0.0" && bound.host != "*" ? bound.host
                : NetworkInfo.localAddress(toward: coordHost, port: coordPort)) ?? "127.0.0.1"
        dataEndpoint = "tcp://\(host):\(bound.port)"
        poller.register(control)
        poller.register(input)
    }

    deinit { zap?.stop() }

    private static func makeControl(_ context: ZMQContext, coordinator: String, identity: String,
                                    security: TransportSecurity?) throws -> ZMQSocket {
        let s = try context.socket(.dealer)
        try s.set(.routingID(Array(identity.utf8)))
        try s.set(.maxMessageSize(maximumCoordinatorControlBytes))
        // After a refused handshake libzmq drops the connection and does not retry; a send
        // would then wait for good. It gives up after 2 s instead (the worker reconnects).
        try s.set(.sendTimeout(milliseconds: 2000))
        if let security { try s.connectCurve(security.keys, serverKey: security.coordinatorKey!) }
        try s.connect(coordinator)
        return s
    }

    public func poll(timeout: Double, _ handle: (WorkerEvent) throws -> Void) throws {
        _ = try poller.poll(timeout: .milliseconds(Int(max(0, timeout) * 1000)))
        while try control.receive(into: &parts, timeout: .zero) {
            guard let last = parts.last else { continue }
            try last.withUnsafeBytes { try handle(.control($0)) }
        }
        while try input.receive(into: &parts, timeout: .zero) {
            guard let last = parts.last else { continue }
            try last.withUnsafeBytes { try handle(.data($0)) }
        }
    }

    public func sendControl(_ payload: [UInt8]) throws { try control.send([payload]) }

    /// Waits up to `timeout` for one control message (while weights are being fetched).
    public func receiveControl(timeout: Double) throws -> [UInt8]? {
        guard let parts = try control.receive(timeout: .milliseconds(Int(timeout * 1000))) else { return nil }
        return parts.last
    }

    /// Connects a new output socket (every assignment: a connection refused once is not
    /// retried by libzmq, so a new epoch always starts from a fresh one).
    public func connectOutput(_ endpoint: PeerEndpoint?) throws {
        output = nil
        outputEndpoint = nil
        guard let endpoint else { return }
        let s = try context.socket(.push)
        // A next stage that is gone (or refuses the handshake) must not block this thread for
        // good: the send gives up, the frame is lost, and the coordinator's frame timeout or
        // the next epoch redoes it.
        try s.set(.sendTimeout(milliseconds: 2000))
        if let security, let key = endpoint.serverKey {
            // Queue frames only on a connection whose handshake passed: a refused one would
            // swallow them. A send with none gives up after 2 s and connects again.
            try s.set(.immediate(true))
            try s.connectCurve(security.keys, serverKey: key)
        }
        try s.connect(endpoint.address)
        output = s
        outputEndpoint = endpoint
    }

    public func sendData(_ payload: [UInt8]) throws {
        guard let output, let endpoint = outputEndpoint else {
            throw ZMQError(function: "zmq_send", errno: ENOTCONN, detail: "no next stage")
        }
        do {
            try output.send([payload])
        } catch let error as ZMQError where error.errno == EAGAIN && endpoint.serverKey != nil {
            // libzmq does not reconnect after a refused CURVE handshake: when the next stage had
            // not yet been told to expect this worker's key, the connection is gone for good.
            // Connect again (its ZAP handler knows the key by now) and try once more.
            self.output = nil
            outputEndpoint = nil
            try connectOutput(endpoint)
            try self.output!.send([payload])
        }
    }

    public func allowDataPeers(_ keys: Set<String>) { zap?.allow(keys, domain: "data") }

    public func reconnectControl() throws {
        control = try Self.makeControl(context, coordinator: coordinator, identity: identity, security: security)
        poller = ZMQPoller()
        poller.register(control)
        poller.register(input)
    }

    public func makeHeartbeatChannel() throws -> HeartbeatChannel {
        try ZMQHeartbeatChannel(context: context, coordinator: coordinator, identity: identity + "#hb", security: security)
    }
}

/// A second DEALER (routing id `name#hb`) used only by a worker's heartbeat thread.
// @unchecked: made on the main thread and then used only by the heartbeat thread.
final class ZMQHeartbeatChannel: HeartbeatChannel, @unchecked Sendable {
    private let context: ZMQContext
    private let coordinator: String
    private let identity: String
    private let security: TransportSecurity?
    private var socket: ZMQSocket

    init(context: ZMQContext, coordinator: String, identity: String, security: TransportSecurity?) throws {
        self.context = context
        self.coordinator = coordinator
        self.identity = identity
        self.security = security
        socket = try Self.connect(context, coordinator, identity, security)
    }

    private static func connect(_ context: ZMQContext, _ coordinator: String, _ identity: String,
                                _ security: TransportSecurity?) throws -> ZMQSocket {
        let s = try context.socket(.dealer)
        try s.set(.routingID(Array(identity.utf8)))
        try s.set(.maxMessageSize(maximumWorkerControlBytes))
        try s.set(.sendHighWaterMark(16))
        if let security { try s.connectCurve(security.keys, serverKey: security.coordinatorKey!) }
        try s.connect(coordinator)
        return s
    }

    func send(_ payload: [UInt8]) throws { _ = try socket.send([payload], timeout: .milliseconds(100)) }

    func receive(timeout: Double) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        var wait: Duration = .milliseconds(Int(timeout * 1000))
        while let parts = try socket.receive(timeout: wait) {
            if let last = parts.last { out.append(last) }
            wait = .zero
        }
        return out
    }

    func reconnect() throws { socket = try Self.connect(context, coordinator, identity, security) }
}
