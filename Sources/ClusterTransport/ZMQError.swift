import CZeroMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed ZeroMQ (or socket) call: the function, its errno and the library's text for it.
public struct ZMQError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The C function that failed, e.g. `"zmq_bind"`.
    public let function: String
    /// The errno value it reported.
    public let errno: Int32
    /// `zmq_strerror(errno)`.
    public let message: String
    /// Extra context, e.g. the endpoint of a failed bind.
    public let detail: String

    /// Captures `zmq_errno()` for a call to `function` that just failed.
    init(function: String, detail: String = "") {
        self.init(function: function, errno: zmq_errno(), detail: detail)
    }

    init(function: String, errno: Int32, detail: String = "") {
        self.function = function
        self.errno = errno
        self.message = String(cString: zmq_strerror(errno))
        self.detail = detail
    }

    /// The operation would have blocked or its timeout expired (`EAGAIN`).
    public var isWouldBlock: Bool { errno == EAGAIN }

    /// The context was terminated (`ETERM`).
    public var isContextTerminated: Bool { errno == ETERM }

    public var description: String {
        let context = detail.isEmpty ? "" : " (\(detail))"
        return "\(function) failed\(context): \(message) [errno \(errno)]"
    }
}

// MARK: - Timeouts

/// Converts an optional timeout into the milliseconds `zmq_poll` takes (-1: forever), rounding up
/// so that a short positive timeout does not become a non-blocking poll.
func pollMilliseconds(_ timeout: Duration?) -> Int {
    guard let timeout else { return -1 }
    if timeout <= .zero { return 0 }
    let (seconds, attoseconds) = timeout.components
    let attosecondsPerMillisecond: Int64 = 1_000_000_000_000_000
    let fraction = (attoseconds + attosecondsPerMillisecond - 1) / attosecondsPerMillisecond
    let (milliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1000)
    if overflow || milliseconds > Int64(Int32.max) { return Int(Int32.max) }
    return Int(milliseconds + fraction)
}

/// A deadline on the monotonic clock for a call that may be retried after `EINTR`.
struct PollDeadline {
    private let deadline: ContinuousClock.Instant?

    init(_ timeout: Duration?) {
        deadline = timeout.map { ContinuousClock.now + max($0, .zero) }
    }

    /// Milliseconds left for `zmq_poll` (-1: no deadline; 0 once it has passed).
    var remainingMilliseconds: Int {
        guard let deadline else { return -1 }
        return pollMilliseconds(deadline - ContinuousClock.now)
    }
}
