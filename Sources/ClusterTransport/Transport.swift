// MARK: - The messaging seam between coordinator and workers

/// Where a socket connects, and the CURVE public key (Z85) the peer must prove (nil when the
/// cluster runs without security).
public struct PeerEndpoint: Sendable, Equatable, Hashable {
    public var address: String
    public var serverKey: String?

    public init(address: String, serverKey: String? = nil) {
        self.address = address
        self.serverKey = serverKey
    }
}

/// A control message as the coordinator receives it.
public struct ControlMessage {
    /// The routing identity the peer chose (its worker name; `name#hb` for its heartbeats).
    public var identity: [UInt8]
    /// The CURVE public key (Z85) the peer proved in its handshake; nil without security.
    public var authenticatedKey: String?
    /// The peer's address, for logs.
    public var peerAddress: String?
    public var payload: UnsafeRawBufferPointer
}

/// What the coordinator's transport hands to its loop.
public enum CoordinatorEvent {
    /// A control message from a worker.
    case control(ControlMessage)
    /// A frame returning from the last stage.
    case data(UnsafeRawBufferPointer)
}

/// Messaging between the coordinator and the workers, as the coordinator sees it. The
/// ZeroMQ implementation runs the real cluster; the in-memory one runs clusters inside a test
/// process with faults injected at will.
///
/// Used from one thread, except ``wake()``.
public protocol CoordinatorTransport: AnyObject {
    /// Waits up to `timeout` seconds for traffic (less after ``wake()``), then hands every
    /// message that arrived to `handle`. The buffers are valid only during the call.
    func poll(timeout: Double, _ handle: (CoordinatorEvent) throws -> Void) throws
    /// Sends a control message to the peer with routing identity `identity`.
    func sendControl(_ payload: [UInt8], to identity: [UInt8]) throws
    /// Points the data output at the first stage's input (nil: no first stage).
    func connectFirstStage(_ endpoint: PeerEndpoint?) throws
    /// Sends a frame to the first stage.
    func sendData(_ payload: [UInt8]) throws
    /// The address the last stage sends its output to.
    var returnEndpoint: String { get }
    /// Which peers may connect to the data return: the keys of the current epoch's workers
    /// (ignored without security).
    func allowDataPeers(_ keys: Set<String>)
    /// Interrupts ``poll(timeout:_:)``; callable from any thread.
    var waker: @Sendable () -> Void { get }
}

/// What a worker's transport hands to its loop.
public enum WorkerEvent {
    /// A control message from the coordinator.
    case control(UnsafeRawBufferPointer)
    /// A frame (or an in-band pipeline message) from the previous stage or the coordinator.
    case data(UnsafeRawBufferPointer)
}

/// The heartbeat path of a worker, used from its own thread so that heartbeats flow while
/// the main thread computes.
public protocol HeartbeatChannel: AnyObject, Sendable {
    func send(_ payload: [UInt8]) throws
    /// Replies that arrived (the coordinator's acknowledgements), waiting up to `timeout`.
    func receive(timeout: Double) throws -> [[UInt8]]
    /// Drops the connection and connects again (the coordinator went silent).
    func reconnect() throws
}

/// Messaging between a worker and the coordinator and the next stage.
///
/// Used from one thread; the ``HeartbeatChannel`` it makes is used from another.
public protocol WorkerTransport: AnyObject {
    func poll(timeout: Double, _ handle: (WorkerEvent) throws -> Void) throws
    func sendControl(_ payload: [UInt8]) throws
    /// Points the data output at the next stage (or the coordinator's return).
    func connectOutput(_ endpoint: PeerEndpoint?) throws
    func sendData(_ payload: [UInt8]) throws
    /// The address of this worker's data input, as other stages reach it.
    var dataEndpoint: String { get }
    /// Which peers may send to the data input: the coordinator and the previous stage
    /// (ignored without security).
    func allowDataPeers(_ keys: Set<String>)
    /// Drops the control connection and connects again.
    func reconnectControl() throws
    func makeHeartbeatChannel() throws -> HeartbeatChannel
}

// MARK: - Addresses

/// Splits "tcp://host:port" into its parts.
public func parseTCPEndpoint(_ endpoint: String) -> (host: String, port: UInt16)? {
    guard endpoint.hasPrefix("tcp://") else { return nil }
    let rest = endpoint.dropFirst(6)
    guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
    return (String(rest[..<colon]), port)
}

/// Whether a host is a loopback address (127.0.0.0/8, ::1, localhost).
public func isLoopbackHost(_ host: String) -> Bool {
    host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
}
