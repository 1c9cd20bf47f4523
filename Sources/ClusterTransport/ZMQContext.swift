import CZeroMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A ZeroMQ context: owns the I/O threads; sockets keep their context alive.
///
/// Thread-safe, unlike sockets.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// - Parameter ioThreads: background I/O threads (one handles about a gigabyte per second).
    public init(ioThreads: Int32 = 1) throws {
        guard let handle = zmq_ctx_new() else { throw ZMQError(function: "zmq_ctx_new") }
        self.handle = handle
        if zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads) != 0 {
            let error = ZMQError(function: "zmq_ctx_set", detail: "ZMQ_IO_THREADS=\(ioThreads)")
            zmq_ctx_term(handle)
            throw error
        }
    }

    deinit {
        // Every socket holds a strong reference to its context, so all sockets are closed
        // here and termination does not block.
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// A new socket of `type` in this context, with linger 0 (closing drops unsent messages).
    public func socket(_ type: ZMQSocketType) throws -> ZMQSocket {
        try ZMQSocket(context: self, type: type)
    }

    /// The linked libzmq version, e.g. (4, 3, 4).
    public static var libraryVersion: (major: Int32, minor: Int32, patch: Int32) {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return (major, minor, patch)
    }
}
