import CZeroMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Types and options

/// The ZeroMQ socket patterns the cluster uses.
public enum ZMQSocketType: Sendable, CaseIterable, CustomStringConvertible {
    /// Sends to connected PULL peers round-robin (pipeline downstream).
    case push
    /// Receives from PUSH peers (pipeline upstream).
    case pull
    /// Asynchronous request/reply client; talks to a ROUTER.
    case dealer
    /// Addresses peers by routing id; the first part of every message is the peer's id.
    case router
    /// Exclusive one-to-one connection.
    case pair
    /// Synchronous reply side (the ZAP handler).
    case rep

    var rawValue: Int32 {
        switch self {
        case .push: return ZMQ_PUSH
        case .pull: return ZMQ_PULL
        case .dealer: return ZMQ_DEALER
        case .router: return ZMQ_ROUTER
        case .pair: return ZMQ_PAIR
        case .rep: return ZMQ_REP
        }
    }

    public var description: String {
        switch self {
        case .push: return "PUSH"
        case .pull: return "PULL"
        case .dealer: return "DEALER"
        case .router: return "ROUTER"
        case .pair: return "PAIR"
        case .rep: return "REP"
        }
    }
}

/// A socket option and its value.
public enum ZMQSocketOption: Sendable {
    /// Outgoing messages queued per peer before sending blocks or drops (`ZMQ_SNDHWM`, 0: no limit).
    case sendHighWaterMark(Int32)
    /// Incoming messages queued per peer (`ZMQ_RCVHWM`, 0: no limit).
    case receiveHighWaterMark(Int32)
    /// The id a ROUTER peer sees for this socket (`ZMQ_ROUTING_ID`, 1...255 bytes, not starting with 0).
    case routingID([UInt8])
    /// Queue messages only to completed connections (`ZMQ_IMMEDIATE`).
    case immediate(Bool)
    /// Interval between ZMTP heartbeat pings (`ZMQ_HEARTBEAT_IVL`, 0: off).
    case heartbeatInterval(milliseconds: Int32)
    /// How long to wait for a heartbeat reply before closing the connection (`ZMQ_HEARTBEAT_TIMEOUT`).
    case heartbeatTimeout(milliseconds: Int32)
    /// Time-to-live the peer applies to this socket's heartbeats (`ZMQ_HEARTBEAT_TTL`).
    case heartbeatTTL(milliseconds: Int32)
    /// How long unsent messages are kept after close (`ZMQ_LINGER`, -1: forever). Sockets start at 0.
    case linger(milliseconds: Int32)
    /// Largest inbound message accepted; larger ones drop the connection (`ZMQ_MAXMSGSIZE`, -1: no limit).
    case maxMessageSize(Int64)
    /// Make a ROUTER report unroutable messages with `EHOSTUNREACH` instead of dropping them
    /// (`ZMQ_ROUTER_MANDATORY`).
    case routerMandatory(Bool)
    /// Let a ROUTER hand an identity over to a new connection that claims it (a peer that
    /// reconnected), instead of refusing the newcomer (`ZMQ_ROUTER_HANDOVER`).
    case routerHandover(Bool)
    /// Reconnection interval after a lost connection (`ZMQ_RECONNECT_IVL`).
    case reconnectInterval(milliseconds: Int32)
    /// Timeout of the blocking ``ZMQSocket/send(_:)`` (`ZMQ_SNDTIMEO`, -1: forever).
    case sendTimeout(milliseconds: Int32)
    /// Act as the CURVE server: clients must know this socket's public key (`ZMQ_CURVE_SERVER`).
    case curveServer(Bool)
    /// This socket's long-term CURVE public key, Z85 (`ZMQ_CURVE_PUBLICKEY`).
    case curvePublicKey(String)
    /// This socket's long-term CURVE secret key, Z85 (`ZMQ_CURVE_SECRETKEY`).
    case curveSecretKey(String)
    /// The server's public key a CURVE client expects, Z85 (`ZMQ_CURVE_SERVERKEY`).
    case curveServerKey(String)
    /// The ZAP domain the handler sees for this socket's handshakes (`ZMQ_ZAP_DOMAIN`).
    case zapDomain(String)
}

/// Properties libzmq attaches to a received message.
public struct ZMQMessageProperties: Sendable, Equatable {
    /// What the ZAP handler returned as the peer's user id (here: its Z85 public key).
    public var userID: String?
    /// The peer's IP address.
    public var peerAddress: String?

    public init() {}
}

// MARK: - Socket

/// A ZeroMQ socket owning its handle; closed (with the socket's linger) when released.
///
/// Not thread-safe: use a socket from one thread at a time.
public final class ZMQSocket {
    /// The context the socket belongs to (kept alive by the socket).
    public let context: ZMQContext
    /// The socket pattern.
    public let type: ZMQSocketType
    let handle: UnsafeMutableRawPointer
    /// Reused for every received part; zmq_msg_t must not be moved, so it lives on the heap.
    private let message: UnsafeMutablePointer<zmq_msg_t>

    init(context: ZMQContext, type: ZMQSocketType) throws {
        guard let handle = zmq_socket(context.handle, type.rawValue) else {
            throw ZMQError(function: "zmq_socket", detail: "\(type)")
        }
        self.context = context
        self.type = type
        self.handle = handle
        self.message = .allocate(capacity: 1)
        do {
            try set(.linger(milliseconds: 0))
        } catch {
            zmq_close(handle)
            message.deallocate()
            throw error
        }
    }

    deinit {
        zmq_close(handle)
        message.deallocate()
    }

    // MARK: - Endpoints

    /// Binds to `endpoint`, e.g. `tcp://127.0.0.1:5601` or `tcp://127.0.0.1:*` (see ``lastEndpoint``).
    public func bind(_ endpoint: String) throws {
        if zmq_bind(handle, endpoint) != 0 { throw ZMQError(function: "zmq_bind", detail: endpoint) }
    }

    /// Connects to `endpoint`; the connection is made (and remade) in the background.
    public func connect(_ endpoint: String) throws {
        if zmq_connect(handle, endpoint) != 0 { throw ZMQError(function: "zmq_connect", detail: endpoint) }
    }

    /// Stops listening on an endpoint given to ``bind(_:)`` (use the resolved ``lastEndpoint`` for wildcards).
    ///
    /// The listener is closed by the context's I/O thread, so the port may stay taken for a moment.
    public func unbind(_ endpoint: String) throws {
        if zmq_unbind(handle, endpoint) != 0 { throw ZMQError(function: "zmq_unbind", detail: endpoint) }
    }

    /// Drops a connection made with ``connect(_:)``.
    public func disconnect(_ endpoint: String) throws {
        if zmq_disconnect(handle, endpoint) != 0 { throw ZMQError(function: "zmq_disconnect", detail: endpoint) }
    }

    /// The endpoint last bound or connected, with wildcards resolved (`ZMQ_LAST_ENDPOINT`).
    public var lastEndpoint: String {
        get throws {
            let bytes = try bytesOption(ZMQ_LAST_ENDPOINT, name: "ZMQ_LAST_ENDPOINT", capacity: 1024)
            return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    // MARK: - Options

    /// Sets a socket option.
    public func set(_ option: ZMQSocketOption) throws {
        switch option {
        case .sendHighWaterMark(let value): try setInt32(ZMQ_SNDHWM, value, name: "ZMQ_SNDHWM")
        case .receiveHighWaterMark(let value): try setInt32(ZMQ_RCVHWM, value, name: "ZMQ_RCVHWM")
        case .routingID(let id):
            let status = id.withUnsafeBytes { zmq_setsockopt(handle, ZMQ_ROUTING_ID, $0.baseAddress, $0.count) }
            if status != 0 { throw ZMQError(function: "zmq_setsockopt", detail: "ZMQ_ROUTING_ID") }
        case .immediate(let on): try setInt32(ZMQ_IMMEDIATE, on ? 1 : 0, name: "ZMQ_IMMEDIATE")
        case .heartbeatInterval(let ms): try setInt32(ZMQ_HEARTBEAT_IVL, ms, name: "ZMQ_HEARTBEAT_IVL")
        case .heartbeatTimeout(let ms): try setInt32(ZMQ_HEARTBEAT_TIMEOUT, ms, name: "ZMQ_HEARTBEAT_TIMEOUT")
        case .heartbeatTTL(let ms): try setInt32(ZMQ_HEARTBEAT_TTL, ms, name: "ZMQ_HEARTBEAT_TTL")
        case .linger(let ms): try setInt32(ZMQ_LINGER, ms, name: "ZMQ_LINGER")
        case .maxMessageSize(let bytes):
            var value = bytes
            if zmq_setsockopt(handle, ZMQ_MAXMSGSIZE, &value, MemoryLayout<Int64>.size) != 0 {
                throw ZMQError(function: "zmq_setsockopt", detail: "ZMQ_MAXMSGSIZE")
            }
        case .routerMandatory(let on): try setInt32(ZMQ_ROUTER_MANDATORY, on ? 1 : 0, name: "ZMQ_ROUTER_MANDATORY")
        case .routerHandover(let on): try setInt32(ZMQ_ROUTER_HANDOVER, on ? 1 : 0, name: "ZMQ_ROUTER_HANDOVER")
        case .reconnectInterval(let ms): try setInt32(ZMQ_RECONNECT_IVL, ms, name: "ZMQ_RECONNECT_IVL")
        case .sendTimeout(let ms): try setInt32(ZMQ_SNDTIMEO, ms, name: "ZMQ_SNDTIMEO")
        case .curveServer(let on): try setInt32(ZMQ_CURVE_SERVER, on ? 1 : 0, name: "ZMQ_CURVE_SERVER")
        case .curvePublicKey(let key): try setString(ZMQ_CURVE_PUBLICKEY, key, name: "ZMQ_CURVE_PUBLICKEY")
        case .curveSecretKey(let key): try setString(ZMQ_CURVE_SECRETKEY, key, name: "ZMQ_CURVE_SECRETKEY")
        case .curveServerKey(let key): try setString(ZMQ_CURVE_SERVERKEY, key, name: "ZMQ_CURVE_SERVERKEY")
        case .zapDomain(let domain): try setString(ZMQ_ZAP_DOMAIN, domain, name: "ZMQ_ZAP_DOMAIN")
        }
    }

    /// `ZMQ_SNDHWM`.
    public var sendHighWaterMark: Int32 { get throws { try int32Option(ZMQ_SNDHWM, name: "ZMQ_SNDHWM") } }
    /// `ZMQ_RCVHWM`.
    public var receiveHighWaterMark: Int32 { get throws { try int32Option(ZMQ_RCVHWM, name: "ZMQ_RCVHWM") } }
    /// `ZMQ_LINGER` in milliseconds.
    public var linger: Int32 { get throws { try int32Option(ZMQ_LINGER, name: "ZMQ_LINGER") } }
    /// `ZMQ_IMMEDIATE`.
    public var immediate: Bool { get throws { try int32Option(ZMQ_IMMEDIATE, name: "ZMQ_IMMEDIATE") != 0 } }
    /// `ZMQ_HEARTBEAT_IVL` in milliseconds.
    public var heartbeatInterval: Int32 { get throws { try int32Option(ZMQ_HEARTBEAT_IVL, name: "ZMQ_HEARTBEAT_IVL") } }
    /// `ZMQ_HEARTBEAT_TIMEOUT` in milliseconds.
    public var heartbeatTimeout: Int32 { get throws { try int32Option(ZMQ_HEARTBEAT_TIMEOUT, name: "ZMQ_HEARTBEAT_TIMEOUT") } }
    /// `ZMQ_MAXMSGSIZE` in bytes.
    public var maxMessageSize: Int64 {
        get throws {
            var value: Int64 = 0
            var size = MemoryLayout<Int64>.size
            if zmq_getsockopt(handle, ZMQ_MAXMSGSIZE, &value, &size) != 0 {
                throw ZMQError(function: "zmq_getsockopt", detail: "ZMQ_MAXMSGSIZE")
            }
            return value
        }
    }
    /// `ZMQ_ROUTING_ID`.
    public var routingID: [UInt8] { get throws { try bytesOption(ZMQ_ROUTING_ID, name: "ZMQ_ROUTING_ID", capacity: 256) } }

    /// A string option, passed as its bytes (a Z85 key is 40 characters).
    private func setString(_ option: Int32, _ value: String, name: String) throws {
        let bytes = Array(value.utf8)
        let status = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        if status != 0 { throw ZMQError(function: "zmq_setsockopt", detail: name) }
    }

    private func setInt32(_ option: Int32, _ value: Int32, name: String) throws {
        var value = value
        if zmq_setsockopt(handle, option, &value, MemoryLayout<Int32>.size) != 0 {
            throw ZMQError(function: "zmq_setsockopt", detail: "\(name)=\(value)")
        }
    }

    private func int32Option(_ option: Int32, name: String) throws -> Int32 {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(handle, option, &value, &size) != 0 {
            throw ZMQError(function: "zmq_getsockopt", detail: name)
        }
        return value
    }

    private func bytesOption(_ option: Int32, name: String, capacity: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: capacity)
        var size = capacity
        let status = buffer.withUnsafeMutableBytes { zmq_getsockopt(handle, option, $0.baseAddress, &size) }
        if status != 0 { throw ZMQError(function: "zmq_getsockopt", detail: name) }
        return Array(buffer.prefix(size))
    }

    // MARK: - Sending

    /// Sends a multipart message, blocking while the queue is full (until `ZMQ_SNDTIMEO`, which
    /// then throws an error with ``ZMQError/isWouldBlock``).
    public func send(_ parts: [[UInt8]]) throws {
        precondition(!parts.isEmpty, "a ZeroMQ message has at least one part")
        for index in parts.indices {
            try parts[index].withUnsafeBytes { bytes in
                try sendPart(bytes, more: index < parts.count - 1, flags: 0)
            }
        }
    }

    /// Sends a multipart message, waiting at most `timeout` for room in the queue.
    ///
    /// - Returns: false when the message could not be queued in time (nothing was sent).
    @discardableResult
    public func send(_ parts: [[UInt8]], timeout: Duration) throws -> Bool {
        precondition(!parts.isEmpty, "a ZeroMQ message has at least one part")
        let deadline = PollDeadline(timeout)
        while true {
            let sent = try parts[0].withUnsafeBytes { bytes in
                try trySendPart(bytes, more: parts.count > 1)
            }
            if sent { break }
            if try !waitFor(Int16(ZMQ_POLLOUT), deadline: deadline) { return false }
        }
        // Once the first part is queued the remaining parts are accepted without blocking.
        for index in parts.indices.dropFirst() {
            try parts[index].withUnsafeBytes { bytes in
                try sendPart(bytes, more: index < parts.count - 1, flags: 0)
            }
        }
        return true
    }

    /// Sends one part from borrowed memory (no intermediate array); set `more` for all but the
    /// last part of a multipart message. Blocks like ``send(_:)``.
    public func send(_ bytes: UnsafeRawBufferPointer, more: Bool = false) throws {
        try sendPart(bytes, more: more, flags: 0)
    }

    private func sendPart(_ bytes: UnsafeRawBufferPointer, more: Bool, flags: Int32) throws {
        let flags = flags | (more ? ZMQ_SNDMORE : 0)
        while zmq_send(handle, bytes.baseAddress, bytes.count, flags) < 0 {
            let error = ZMQError(function: "zmq_send", detail: "\(bytes.count) bytes")
            if error.errno != EINTR { throw error }
        }
    }

    /// Sends one part without blocking; false when the queue is full.
    private func trySendPart(_ bytes: UnsafeRawBufferPointer, more: Bool) throws -> Bool {
        do {
            try sendPart(bytes, more: more, flags: ZMQ_DONTWAIT)
            return true
        } catch let error as ZMQError where error.isWouldBlock {
            return false
        }
    }

    // MARK: - Receiving

    /// Receives one multipart message, waiting at most `timeout` (nil: forever).
    ///
    /// - Returns: the parts, or nil when the timeout expired.
    public func receive(timeout: Duration? = nil) throws -> [[UInt8]]? {
        var parts: [[UInt8]] = []
        return try receive(into: &parts, timeout: timeout) ? parts : nil
    }

    /// Receives one multipart message into `parts`, reusing the storage of the arrays already
    /// there; waits at most `timeout` (nil: forever).
    ///
    /// - Returns: false when the timeout expired (`parts` is then unchanged).
    public func receive(into parts: inout [[UInt8]], timeout: Duration? = nil) throws -> Bool {
        var ignored = ZMQMessageProperties()
        return try receive(into: &parts, properties: &ignored, wanted: false, timeout: timeout)
    }

    /// As ``receive(into:timeout:)``, also reading the message's `User-Id` (what the ZAP
    /// handler said of the peer) and `Peer-Address` properties.
    public func receive(into parts: inout [[UInt8]], properties: inout ZMQMessageProperties,
                        timeout: Duration? = nil) throws -> Bool {
        try receive(into: &parts, properties: &properties, wanted: true, timeout: timeout)
    }

    private func receive(into parts: inout [[UInt8]], properties: inout ZMQMessageProperties, wanted: Bool,
                         timeout: Duration?) throws -> Bool {
        let deadline = PollDeadline(timeout)
        var more = false
        while true {
            if try receivePart(into: &parts, index: 0, more: &more, flags: ZMQ_DONTWAIT,
                               properties: &properties, wanted: wanted) { break }
            if try !waitFor(Int16(ZMQ_POLLIN), deadline: deadline) { return false }
        }
        // The remaining parts of a multipart message arrive together with the first. A ROUTER
        // makes the first part (the routing id) itself: the peer's properties come with the
        // parts the peer sent, so every part is asked.
        var count = 1
        while more {
            _ = try receivePart(into: &parts, index: count, more: &more, flags: 0, properties: &properties, wanted: wanted)
            count += 1
        }
        if parts.count > count { parts.removeLast(parts.count - count) }
        return true
    }

    /// Receives one part into `parts[index]` (appending when needed); false on `EAGAIN`.
    private func receivePart(into parts: inout [[UInt8]], index: Int, more: inout Bool, flags: Int32) throws -> Bool {
        var none = ZMQMessageProperties()
        return try receivePart(into: &parts, index: index, more: &more, flags: flags, properties: &none, wanted: false)
    }

    private func receivePart(into parts: inout [[UInt8]], index: Int, more: inout Bool, flags: Int32,
                             properties: inout ZMQMessageProperties, wanted: Bool) throws -> Bool {
        zmq_msg_init(message)
        defer { zmq_msg_close(message) }
        while zmq_msg_recv(message, handle, flags) < 0 {
            let error = ZMQError(function: "zmq_msg_recv")
            if error.isWouldBlock && flags & ZMQ_DONTWAIT != 0 { return false }
            if error.errno != EINTR { throw error }
        }
        let bytes = UnsafeRawBufferPointer(start: zmq_msg_data(message), count: zmq_msg_size(message))
        if index < parts.count {
            parts[index].removeAll(keepingCapacity: true)
            parts[index].append(contentsOf: bytes)
        } else {
            parts.append(Array(bytes))
        }
        more = zmq_msg_more(message) != 0
        if wanted {
            if index == 0 { properties = ZMQMessageProperties() }
            if let u = zmq_msg_gets(message, "User-Id") { properties.userID = String(cString: u) }
            if let a = zmq_msg_gets(message, "Peer-Address") { properties.peerAddress = String(cString: a) }
        }
        return true
    }

    // MARK: - Waiting

    /// Waits until the socket has `events` or the deadline passes; retries after `EINTR`.
    private func waitFor(_ events: Int16, deadline: PollDeadline) throws -> Bool {
        var item = zmq_pollitem_t(socket: handle, fd: 0, events: events, revents: 0)
        while true {
            let status = zmq_poll(&item, 1, deadline.remainingMilliseconds)
            if status > 0 { return true }
            if status == 0 { return false }
            let error = ZMQError(function: "zmq_poll")
            if error.errno != EINTR { throw error }
        }
    }
}
