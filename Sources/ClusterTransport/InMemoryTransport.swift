import Foundation

/// A network inside one process for coordinator and workers: every node's mailboxes live
/// here, and a test can drop, delay, duplicate or reorder any message, or cut a node off.
///
/// Addresses are `mem://NODE/...`. Thread-safe: all state is under one condition lock.
public final class InMemoryNetwork: @unchecked Sendable {
    // @unchecked: every stored property is read and written with `condition` held.

    /// What a message is, for an interceptor.
    public struct MessageInfo: Sendable {
        public enum Kind: Sendable { case control, heartbeat, data }
        public var kind: Kind
        /// Sending and receiving node names ("coordinator", "w1", ...).
        public var from: String
        public var to: String
        public var payload: [UInt8]
    }

    /// What to do with a message.
    public enum FaultAction: Sendable {
        case deliver
        case drop
        /// Deliver twice.
        case duplicate
        /// Deliver after `seconds` (messages sent later may overtake it).
        case delay(Double)
    }

    private struct Envelope {
        var payload: [UInt8]
        var identity: [UInt8]
        var deliverAt: Double
        var order: UInt64
    }

    private let condition = NSCondition()
    private var mailboxes: [String: [Envelope]] = [:]
    private var open: [String: UInt64] = [:]   // address → the token of the transport that owns it
    private var cut = Set<String>()
    private var counter: UInt64 = 0
    private var interceptor: (@Sendable (MessageInfo) -> FaultAction)?
    private var wakeFlags: [String: Bool] = [:]

    public init() {}

    /// Decides the fate of every message from now on (nil: deliver everything).
    public func intercept(_ rule: (@Sendable (MessageInfo) -> FaultAction)?) {
        condition.lock()
        interceptor = rule
        condition.unlock()
    }

    /// Drops every message from or to `node` until ``heal(_:)``.
    public func partition(_ node: String) {
        condition.lock()
        cut.insert(node)
        condition.unlock()
    }

    public func heal(_ node: String) {
        condition.lock()
        cut.remove(node)
        condition.broadcast()
        condition.unlock()
    }

    static func node(of address: String) -> String {
        var s = address.hasPrefix("mem://") ? String(address.dropFirst(6)) : address
        if let slash = s.firstIndex(of: "/") { s = String(s[..<slash]) }
        if s.hasSuffix("#hb") { s = String(s.dropLast(3)) }
        return s
    }

    // MARK: - Mailboxes

    /// Opens `address` for delivery and returns the owner token that closes it. A new owner
    /// (a worker restarted under the same name) takes the address over; the old owner's late
    /// close then leaves it open.
    func openMailbox(_ address: String) -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        counter += 1
        open[address] = counter
        mailboxes[address] = mailboxes[address] ?? []
        return counter
    }

    func closeMailbox(_ address: String, owner: UInt64) {
        condition.lock()
        defer { condition.unlock() }
        guard open[address] == owner else { return }
        open[address] = nil
        mailboxes[address] = nil
    }

    func post(_ payload: [UInt8], identity: [UInt8] = [], to address: String, kind: MessageInfo.Kind, from: String) {
        condition.lock()
        defer { condition.unlock() }
        let to = Self.node(of: address)
        guard open[address] != nil, !cut.contains(to), !cut.contains(Self.node(of: from)) else { return }
        let action = interceptor?(MessageInfo(kind: kind, from: Self.node(of: from), to: to, payload: payload)) ?? .deliver
        let now = monotonicSeconds()
        var copies = 1, delay = 0.0
        switch action {
        case .deliver: break
        case .drop: return
        case .duplicate: copies = 2
        case .delay(let s): delay = s
        }
        for _ in 0..<copies {
            counter += 1
            mailboxes[address, default: []].append(Envelope(payload: payload, identity: identity, deliverAt: now + delay, order: counter))
        }
        condition.broadcast()
    }

    /// Waits up to `timeout` for messages due in any of `addresses`, then takes them all (in
    /// delivery order).
    func take(_ addresses: [String], timeout: Double, wakeKey: String) -> [(address: String, identity: [UInt8], payload: [UInt8])] {
        condition.lock()
        defer { condition.unlock() }
        let deadline = monotonicSeconds() + timeout
        while true {
            let now = monotonicSeconds()
            var due: [(String, Envelope)] = []
            var next = deadline
            for a in addresses {
                guard var box = mailboxes[a], !box.isEmpty else { continue }
                var keep: [Envelope] = []
                for e in box {
                    if e.deliverAt <= now { due.append((a, e)) } else { keep.append(e); next = min(next, e.deliverAt) }
                }
                box = keep
                mailboxes[a] = box
            }
            if !due.isEmpty {
                due.sort { ($0.1.deliverAt, $0.1.order) < ($1.1.deliverAt, $1.1.order) }
                return due.map { ($0.0, $0.1.identity, $0.1.payload) }
            }
            if wakeFlags[wakeKey] == true {
                wakeFlags[wakeKey] = false
                return []
            }
            if now >= deadline { return [] }
            _ = condition.wait(until: Date(timeIntervalSinceNow: max(0.0005, next - now)))
        }
    }

    func wake(_ key: String) {
        condition.lock()
        wakeFlags[key] = true
        condition.broadcast()
        condition.unlock()
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

// MARK: - Coordinator side

/// The coordinator's end of an ``InMemoryNetwork``: control messages to `mem://NAME`, frames
/// back to `mem://NAME/return`.
public final class InMemoryCoordinatorTransport: CoordinatorTransport {
    public let network: InMemoryNetwork
    public let name: String
    public var controlAddress: String { "mem://\(name)" }
    public var returnEndpoint: String { "mem://\(name)/return" }
    private var firstStage: String?
    private var owners: [UInt64] = []

    public init(network: InMemoryNetwork, name: String = "coordinator") {
        self.network = network
        self.name = name
        owners = [network.openMailbox("mem://\(name)"), network.openMailbox("mem://\(name)/return")]
    }

    deinit {
        network.closeMailbox(controlAddress, owner: owners[0])
        network.closeMailbox(returnEndpoint, owner: owners[1])
    }

    public func poll(timeout: Double, _ handle: (CoordinatorEvent) throws -> Void) throws {
        for m in network.take([controlAddress, returnEndpoint], timeout: timeout, wakeKey: controlAddress) {
            try m.payload.withUnsafeBytes { bytes in
                if m.address == controlAddress {
                    try handle(.control(ControlMessage(identity: m.identity, authenticatedKey: nil, peerAddress: "memory", payload: bytes)))
                } else {
                    try handle(.data(bytes))
                }
            }
        }
    }

    public func sendControl(_ payload: [UInt8], to identity: [UInt8]) throws {
        let id = String(decoding: identity, as: UTF8.self)
        network.post(payload, to: "mem://\(id)/control", kind: id.hasSuffix("#hb") ? .heartbeat : .control, from: name)
    }

    public func connectFirstStage(_ endpoint: PeerEndpoint?) throws { firstStage = endpoint?.address }

    public func sendData(_ payload: [UInt8]) throws {
        guard let firstStage else { return }
        network.post(payload, to: firstStage, kind: .data, from: name)
    }

    public func allowDataPeers(_ keys: Set<String>) {}
    public var waker: @Sendable () -> Void {
        let network = self.network, address = controlAddress
        return { network.wake(address) }
    }
}

// MARK: - Worker side

/// A worker's end of an ``InMemoryNetwork``: its control mailbox `mem://NAME/control`, its
/// data input `mem://NAME/data`.
public final class InMemoryWorkerTransport: WorkerTransport {
    public let network: InMemoryNetwork
    public let name: String
    public let coordinator: String
    public var dataEndpoint: String { "mem://\(name)/data" }
    private var controlBox: String { "mem://\(name)/control" }
    private var output: String?
    private var owners: [UInt64] = []

    public init(network: InMemoryNetwork, name: String, coordinator: String = "mem://coordinator") {
        self.network = network
        self.name = name
        self.coordinator = coordinator
        owners = [network.openMailbox("mem://\(name)/control"), network.openMailbox("mem://\(name)/data")]
    }

    deinit {
        network.closeMailbox(controlBox, owner: owners[0])
        network.closeMailbox(dataEndpoint, owner: owners[1])
    }

    public func poll(timeout: Double, _ handle: (WorkerEvent) throws -> Void) throws {
        for m in network.take([controlBox, dataEndpoint], timeout: timeout, wakeKey: controlBox) {
            try m.payload.withUnsafeBytes { try m.address == controlBox ? handle(.control($0)) : handle(.data($0)) }
        }
    }

    public func sendControl(_ payload: [UInt8]) throws {
        network.post(payload, identity: Array(name.utf8), to: coordinator, kind: .control, from: name)
    }

    public func connectOutput(_ endpoint: PeerEndpoint?) throws { output = endpoint?.address }

    public func sendData(_ payload: [UInt8]) throws {
        guard let output else { return }
        network.post(payload, to: output, kind: .data, from: name)
    }

    public func allowDataPeers(_ keys: Set<String>) {}
    public func reconnectControl() throws {}

    public func makeHeartbeatChannel() throws -> HeartbeatChannel {
        InMemoryHeartbeatChannel(network: network, identity: name + "#hb", coordinator: coordinator)
    }
}

final class InMemoryHeartbeatChannel: HeartbeatChannel, Sendable {
    let network: InMemoryNetwork
    let identity: String
    let coordinator: String
    let owner: UInt64

    init(network: InMemoryNetwork, identity: String, coordinator: String) {
        self.network = network
        self.identity = identity
        self.coordinator = coordinator
        owner = network.openMailbox("mem://\(identity)/control")
    }

    deinit { network.closeMailbox("mem://\(identity)/control", owner: owner) }

    func send(_ payload: [UInt8]) throws {
        network.post(payload, identity: Array(identity.utf8), to: coordinator, kind: .heartbeat, from: identity)
    }

    func receive(timeout: Double) throws -> [[UInt8]] {
        network.take(["mem://\(identity)/control"], timeout: timeout, wakeKey: "mem://\(identity)/control").map(\.payload)
    }

    func reconnect() throws {}
}
