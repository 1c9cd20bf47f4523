import CZeroMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Events a poller waits for on a socket.
public struct ZMQPollEvents: OptionSet, Sendable, Hashable {
    public let rawValue: Int16
    public init(rawValue: Int16) { self.rawValue = rawValue }

    /// A message can be received without blocking.
    public static let readable = ZMQPollEvents(rawValue: Int16(ZMQ_POLLIN))
    /// A message can be sent without blocking.
    public static let writable = ZMQPollEvents(rawValue: Int16(ZMQ_POLLOUT))
}

/// Waits on several sockets at once.
///
/// Sockets are registered once and identified by the index ``register(_:for:)`` returns.
/// The poller keeps its sockets alive. Not thread-safe.
public final class ZMQPoller {
    private var sockets: [ZMQSocket] = []
    private var items: [zmq_pollitem_t] = []

    public init() {}

    /// Number of registered sockets.
    public var count: Int { sockets.count }

    /// Adds `socket`, waiting for `events`; returns its index.
    @discardableResult
    public func register(_ socket: ZMQSocket, for events: ZMQPollEvents = .readable) -> Int {
        sockets.append(socket)
        items.append(zmq_pollitem_t(socket: socket.handle, fd: 0, events: events.rawValue, revents: 0))
        return sockets.count - 1
    }

    /// The socket registered at `index`.
    public func socket(at index: Int) -> ZMQSocket { sockets[index] }

    /// Waits until a registered socket has one of its events or `timeout` passes (nil: forever);
    /// retries after `EINTR`.
    ///
    /// - Returns: how many sockets have events (0 on timeout); see ``events(at:)``.
    @discardableResult
    public func poll(timeout: Duration?) throws -> Int {
        let deadline = PollDeadline(timeout)
        while true {
            let status = items.withUnsafeMutableBufferPointer { buffer in
                zmq_poll(buffer.baseAddress, Int32(buffer.count), deadline.remainingMilliseconds)
            }
            if status >= 0 { return Int(status) }
            let error = ZMQError(function: "zmq_poll")
            if error.errno != EINTR { throw error }
        }
    }

    /// The events the socket at `index` had at the last ``poll(timeout:)``.
    public func events(at index: Int) -> ZMQPollEvents {
        ZMQPollEvents(rawValue: items[index].revents)
    }

    /// Whether the socket at `index` had a message waiting at the last ``poll(timeout:)``.
    public func isReadable(_ index: Int) -> Bool {
        events(at: index).contains(.readable)
    }

    /// Indices of the sockets that had events at the last ``poll(timeout:)``.
    public var readyIndices: [Int] {
        items.indices.filter { items[$0].revents != 0 }
    }
}
