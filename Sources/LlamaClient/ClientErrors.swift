// MARK: - Errors and settings

/// Why a request to an endpoint failed.
public enum LlamaClientError: Error, Equatable, CustomStringConvertible {
    /// The URL cannot be used (only `http://` or `https://host[:port][/path]` is supported).
    case invalidURL(String)
    /// An argument cannot be sent (a header with a line break, a seed out of range, an
    /// unreadable CA certificate file).
    case invalidArgument(String)
    /// The host could not be resolved or reached, the TLS handshake failed, or the connection broke.
    case connectionFailed(String)
    /// Connecting or waiting for data took longer than the timeout.
    case timedOut(String)
    /// The reply is not well-formed HTTP, JSON or server-sent events.
    case malformedResponse(String)
    /// The server answered with an error status; `message` is its error message.
    case httpStatus(Int, message: String)
    /// The server reported an error in the middle of a stream.
    case streamError(String)

    var detail: String {
        switch self {
        case let .invalidURL(text), let .invalidArgument(text), let .connectionFailed(text), let .timedOut(text),
             let .malformedResponse(text), let .streamError(text):
            return text
        case let .httpStatus(status, message):
            return "HTTP \(status): \(message)"
        }
    }

    public var description: String {
        switch self {
        case .invalidURL: return "invalid URL: \(detail)"
        case .invalidArgument: return "invalid argument: \(detail)"
        case .connectionFailed: return "connection failed: \(detail)"
        case .timedOut: return "timed out: \(detail)"
        case .malformedResponse: return "malformed response: \(detail)"
        case .httpStatus: return "server error: \(detail)"
        case .streamError: return "server error during generation: \(detail)"
        }
    }
}

/// How long to wait before giving up. Every request has a connect and a read timeout; a total
/// deadline is optional because a streamed completion may rightly run for a long time as long
/// as tokens keep coming.
public struct ClientTimeouts: Sendable, Equatable {
    /// Seconds to establish the connection (TCP, and the TLS handshake for `https://`).
    public var connect: Double
    /// Seconds to wait for each piece of data (a long prompt may take a while before the first
    /// token), and for the request to be written.
    public var read: Double
    /// Seconds the whole request may take, from connecting to the last byte of the body; nil
    /// for no limit beyond `connect` and `read`.
    public var total: Double?

    public init(connect: Double = 5, read: Double = 300, total: Double? = nil) {
        self.connect = connect
        self.read = read
        self.total = total
    }
}
