import Foundation

// MARK: - Errors and settings

/// Why a request to an endpoint failed.
public enum LlamaClientError: Error, Equatable, CustomStringConvertible {
    /// The URL cannot be used (only `http://host[:port][/path]` is supported).
    case invalidURL(String)
    /// An argument cannot be sent (a header with a line break, a seed out of range).
    case invalidArgument(String)
    /// The host could not be resolved or reached, or the connection broke.
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

/// How long to wait before giving up.
public struct ClientTimeouts: Sendable, Equatable {
    /// Seconds to establish the TCP connection.
    public var connect: Double
    /// Seconds to wait for each piece of data (a long prompt may take a while before the first token).
    public var read: Double

    public init(connect: Double = 5, read: Double = 300) {
        self.connect = connect
        self.read = read
    }
}

// MARK: - URLs

/// An `http://host[:port][/base]` address.
struct HTTPURL: Equatable {
    var host: String
    var port: Int
    /// Path and query, starting with "/".
    var path: String

    /// Parses `text`; a missing scheme means `http://`.
    init(_ text: String) throws {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        if let schemeEnd = rest.range(of: "://") {
            let scheme = rest[..<schemeEnd.lowerBound].lowercased()
            guard scheme == "http" else {
                throw LlamaClientError.invalidURL("'\(text)': only http:// is supported")
            }
            rest = rest[schemeEnd.upperBound...]
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let pathPart = rest[authorityEnd...]
        path = pathPart.isEmpty ? "/" : (pathPart.hasPrefix("/") ? String(pathPart) : "/" + pathPart)

        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw LlamaClientError.invalidURL("'\(text)': unterminated IPv6 address")
            }
            host = String(authority[authority.index(after: authority.startIndex) ..< close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw LlamaClientError.invalidURL("'\(text)': bad port") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty, !host.contains("@") else {
            throw LlamaClientError.invalidURL("'\(text)': no host")
        }
        if let portText {
            guard let value = Int(portText), (1 ... 65535).contains(value) else {
                throw LlamaClientError.invalidURL("'\(text)': bad port '\(portText)'")
            }
            port = value
        } else {
            port = 80
        }
    }

    /// This address with `route` appended to its path.
    func appending(_ route: String) -> HTTPURL {
        var copy = self
        let base = path.hasSuffix("/") ? String(path.dropLast()) : path
        copy.path = base + route
        return copy
    }

    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? name : "\(name):\(port)"
    }
}

// MARK: - Responses

/// A complete HTTP response.
public struct HTTPClientResponse: Sendable {
    public var status: Int
    /// Header fields as received (names in lower case).
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first(where: { $0.name == lowered })?.value
    }
}

/// Reads the status line and header fields, then hands out the body by its framing.
final class ResponseReader {
    let connection: SocketConnection
    let status: Int
    let headers: [(name: String, value: String)]
    private enum Framing {
        case length(remaining: Int)
        case chunked(remainingInChunk: Int, finished: Bool)
        case untilClose
        case none
    }
    private var framing: Framing

    /// Largest body ``readAll(limit:)`` accepts by default.
    static let defaultBodyLimit = 64 << 20

    init(connection: SocketConnection, requestMethod: String) throws {
        self.connection = connection
        guard let statusLine = try connection.readLine() else {
            throw LlamaClientError.malformedResponse("the server closed the connection without answering")
        }
        let statusText = String(decoding: statusLine, as: UTF8.self)
        let parts = statusText.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]), (100 ... 999).contains(code)
        else { throw LlamaClientError.malformedResponse("bad status line '\(statusText.prefix(100))'") }
        status = code

        var fields: [(name: String, value: String)] = []
        while true {
            guard let line = try connection.readLine() else {
                throw LlamaClientError.malformedResponse("the connection closed inside the header")
            }
            if line.isEmpty { break }
            let text = String(decoding: line, as: UTF8.self)
            guard let colon = text.firstIndex(of: ":") else {
                throw LlamaClientError.malformedResponse("bad header line '\(text.prefix(100))'")
            }
            fields.append((text[..<colon].lowercased(), text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            if fields.count > 200 { throw LlamaClientError.malformedResponse("too many header fields") }
        }
        headers = fields

        let transferEncoding = fields.first(where: { $0.name == "transfer-encoding" })?.value.lowercased()
        if requestMethod == "HEAD" || code == 204 || code == 304 || (100 ..< 200).contains(code) {
            framing = .none
        } else if let transferEncoding, transferEncoding.contains("chunked") {
            framing = .chunked(remainingInChunk: 0, finished: false)
        } else if let lengthText = fields.first(where: { $0.name == "content-length" })?.value {
            guard let length = Int(lengthText), length >= 0 else {
                throw LlamaClientError.malformedResponse("bad Content-Length '\(lengthText)'")
            }
            framing = .length(remaining: length)
        } else {
            framing = .untilClose
        }
    }

    /// The next piece of the body; empty at its end.
    func nextBodyBytes() throws -> [UInt8] {
        switch framing {
        case .none:
            return []
        case let .length(remaining):
            guard remaining > 0 else { return [] }
            let bytes = try connection.readSome(maximum: remaining)
            if bytes.isEmpty {
                throw LlamaClientError.malformedResponse("the connection closed \(remaining) bytes before the end of the body")
            }
            framing = .length(remaining: remaining - bytes.count)
            return bytes
        case .untilClose:
            return try connection.readSome(maximum: 65536)
        case let .chunked(remainingInChunk, finished):
            if finished { return [] }
            var remaining = remainingInChunk
            if remaining == 0 {
                guard let sizeLine = try connection.readLine() else {
                    throw LlamaClientError.malformedResponse("the connection closed inside a chunked body")
                }
                let sizeText = String(decoding: sizeLine, as: UTF8.self)
                let hex = sizeText.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                guard let size = Int(hex, radix: 16), size >= 0 else {
                    throw LlamaClientError.malformedResponse("bad chunk size '\(sizeText.prefix(40))'")
                }
                if size == 0 {
                    // Trailer fields, up to the blank line.
                    while let line = try connection.readLine(), !line.isEmpty {}
                    framing = .chunked(remainingInChunk: 0, finished: true)
                    return []
                }
                remaining = size
            }
            let bytes = try connection.readSome(maximum: remaining)
            if bytes.isEmpty { throw LlamaClientError.malformedResponse("the connection closed inside a chunk") }
            remaining -= bytes.count
            if remaining == 0 {
                guard let end = try connection.readLine(), end.isEmpty else {
                    throw LlamaClientError.malformedResponse("a chunk is not followed by CR LF")
                }
            }
            framing = .chunked(remainingInChunk: remaining, finished: false)
            return bytes
        }
    }

    /// The rest of the body.
    func readAll(limit: Int = ResponseReader.defaultBodyLimit) throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let bytes = try nextBodyBytes()
            if bytes.isEmpty { return body }
            body.append(contentsOf: bytes)
            if body.count > limit { throw LlamaClientError.malformedResponse("the body is larger than \(limit) bytes") }
        }
    }

    /// Calls `onLine` with each body line (without its line ending) until it returns false
    /// or the body ends.
    func forEachLine(_ onLine: (String) throws -> Bool) throws {
        var pending: [UInt8] = []
        while true {
            let bytes = try nextBodyBytes()
            if bytes.isEmpty {
                if !pending.isEmpty { _ = try onLine(String(decoding: pending, as: UTF8.self)) }
                return
            }
            pending.append(contentsOf: bytes)
            var lineStart = 0
            while let newline = pending[lineStart...].firstIndex(of: 0x0A) {
                var end = newline
                if end > lineStart, pending[end - 1] == 0x0D { end -= 1 }
                let line = String(decoding: pending[lineStart ..< end], as: UTF8.self)
                lineStart = newline + 1
                if try !onLine(line) { return }
            }
            pending.removeFirst(lineStart)
            if pending.count > SocketConnection.maximumLineBytes {
                throw LlamaClientError.malformedResponse("a body line is longer than \(SocketConnection.maximumLineBytes) bytes")
            }
        }
    }
}

// MARK: - Requests

/// Sends one request (`Connection: close`) and returns a reader positioned at the body.
func sendRequest(method: String, url: HTTPURL, body: [UInt8]?, headers: [String: String],
          timeouts: ClientTimeouts) throws -> ResponseReader
{
    let connection = try SocketConnection(host: url.host, port: url.port,
                                          connectTimeout: timeouts.connect, readTimeout: timeouts.read)
    var head = "\(method) \(url.path) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nConnection: close\r\n"
    head += "User-Agent: llamacluster-client\r\n"
    for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
        guard !name.contains(where: { $0 == "\r" || $0 == "\n" || $0 == ":" }),
              !value.contains(where: { $0 == "\r" || $0 == "\n" })
        else { throw LlamaClientError.invalidArgument("header '\(name)' holds a line break or colon") }
        head += "\(name): \(value)\r\n"
    }
    if let body {
        if headers.keys.contains(where: { $0.lowercased() == "content-type" }) == false {
            head += "Content-Type: application/json\r\n"
        }
        head += "Content-Length: \(body.count)\r\n"
    }
    head += "\r\n"
    try connection.send(Array(head.utf8) + (body ?? []))
    return try ResponseReader(connection: connection, requestMethod: method)
}

/// Sends an HTTP/1.1 request and reads the whole response.
/// - Parameters:
///   - method: "GET", "POST", ...
///   - url: `http://host[:port]/path`.
///   - body: request body (sent as `application/json` unless `headers` set a Content-Type).
/// - Throws: ``LlamaClientError`` for connection, timeout and protocol problems. A non-2xx status
///   is not an error here: look at ``HTTPClientResponse/status``.
public func request(method: String, url: String, body: Data? = nil, headers: [String: String] = [:],
                    timeouts: ClientTimeouts = ClientTimeouts()) throws -> HTTPClientResponse
{
    let reader = try sendRequest(method: method, url: try HTTPURL(url), body: body.map { [UInt8]($0) },
                          headers: headers, timeouts: timeouts)
    let bytes = try reader.readAll()
    return HTTPClientResponse(status: reader.status, headers: reader.headers, body: bytes)
}

/// Sends an HTTP/1.1 request and passes the response body to `onLine` line by line as it
/// arrives (chunked, length-delimited or until close), until `onLine` returns false.
/// - Returns: the status code and header fields.
@discardableResult
public func streamLines(method: String, url: String, body: Data? = nil, headers: [String: String] = [:],
                        timeouts: ClientTimeouts = ClientTimeouts(),
                        onLine: (String) throws -> Bool) throws -> (status: Int, headers: [(name: String, value: String)])
{
    let reader = try sendRequest(method: method, url: try HTTPURL(url), body: body.map { [UInt8]($0) },
                          headers: headers, timeouts: timeouts)
    try reader.forEachLine(onLine)
    return (reader.status, reader.headers)
}

/// The `error.message` of an OpenAI-style error body, or the body itself.
func errorMessage(from body: [UInt8]) -> String {
    if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
       let error = object["error"] as? [String: Any], let message = error["message"] as? String
    {
        return message
    }
    let text = String(decoding: body.prefix(500), as: UTF8.self)
    return text.isEmpty ? "(no body)" : text
}
