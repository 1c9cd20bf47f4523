#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

// The socket calls, named apart from the client's own methods.
private func closeSocket(_ fd: Int32) { _ = close(fd) }
private func connectSocket(_ fd: Int32, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t) -> Int32 { connect(fd, addr, len) }
private func sendBytes(_ fd: Int32, _ p: UnsafeRawPointer?, _ n: Int) -> Int { send(fd, p, n, Int32(MSG_NOSIGNAL)) }

/// A plain HTTP/1.1 client on one TCP connection that it keeps for every request, as
/// browsers, `requests.Session` or the `openai` client do (the project's own client opens a
/// connection per call). It tells apart the ways a connection can end: announced
/// (`Connection: close` on the last response), between requests, or with a request on it and
/// no response — the last is the failure a keep-alive server must never cause.
public final class KeepAliveClient {
    public struct Reply {
        public var status: Int
        public var headers: [String: String]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public enum Failure: Error, CustomStringConvertible {
        /// The server closed the connection with the request on it and sent no response.
        case closedWithoutResponse
        /// The connection ended in the middle of a response.
        case truncated(String)
        case io(String)
        case malformed(String)

        public var description: String {
            switch self {
            case .closedWithoutResponse: return "remote end closed connection without response"
            case .truncated(let s): return "response cut short: \(s)"
            case .io(let s): return s
            case .malformed(let s): return "malformed response: \(s)"
            }
        }
    }

    let port: UInt16
    let timeout: Double
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    /// Connections opened, and how many the server closed after announcing it.
    public private(set) var connections = 0
    public private(set) var announcedCloses = 0

    public init(port: Int, timeout: Double = 30) {
        self.port = UInt16(port)
        self.timeout = timeout
    }

    deinit { close() }

    public func close() {
        if fd >= 0 { closeSocket(fd) }
        fd = -1
        buffer.removeAll()
    }

    private func connect() throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw Failure.io("socket: errno \(errno)") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connectSocket(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            closeSocket(s)
            throw Failure.io("connect: errno \(errno)")
        }
        fd = s
        connections += 1
    }

    /// Sends one request on the kept connection (opening one first if there is none) and
    /// reads its whole response; `onChunk` sees each piece of a chunked body as it arrives
    /// and may return false to hang up mid-response (a client cancelling a stream).
    public func send(_ method: String, _ path: String, json: String? = nil,
                     onChunk: (([UInt8]) -> Bool)? = nil) throws -> Reply? {
        if fd < 0 { try connect() }
        let body = Array((json ?? "").utf8)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        if json != nil { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let bytes = Array((head + "\r\n").utf8) + body
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { sendBytes(fd, $0.baseAddress, $0.count) }
            guard n > 0 else {
                close()
                // Writing into a connection the server already closed: nothing was answered.
                throw Failure.closedWithoutResponse
            }
            sent += n
        }
        // The status line and headers.
        var headerEnd: Int?
        while headerEnd == nil {
            if let i = find([13, 10, 13, 10]) { headerEnd = i; break }
            guard try fill() else {
                let partial = !buffer.isEmpty
                close()
                throw partial ? Failure.truncated("in the headers") : Failure.closedWithoutResponse
            }
        }
        let headText = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
        buffer.removeFirst(headerEnd! + 4)
        var lines = headText.components(separatedBy: "\r\n")
        let statusParts = lines.removeFirst().split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure.malformed(headText) }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var reply = Reply(status: status, headers: headers, body: [])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                let size = try readLine()
                guard let n = Int(size.split(separator: ";")[0], radix: 16) else { throw Failure.malformed("chunk size \(size)") }
                if n == 0 {
                    while try !readLine().isEmpty {}
                    break
                }
                let chunk = try readBytes(n)
                _ = try readBytes(2)
                reply.body += chunk
                if let onChunk, !onChunk(chunk) {
                    close()
                    return nil
                }
            }
        } else if let length = headers["content-length"].flatMap({ Int($0) }) {
            reply.body = try readBytes(length)
        } else {
            throw Failure.malformed("neither Content-Length nor chunked")
        }
        if headers["connection"]?.lowercased() == "close" {
            announcedCloses += 1
            close()
        }
        return reply
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        for i in 0...(buffer.count - pattern.count) where buffer[i] == pattern[0] {
            if Array(buffer[i..<(i + pattern.count)]) == pattern { return i }
        }
        return nil
    }

    /// Reads more bytes; false at the end of the connection.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 {
            buffer += chunk[0..<n]
            return true
        }
        if n == 0 || errno == ECONNRESET { return false }
        throw Failure.io("recv: errno \(errno)\(errno == EAGAIN ? " (timed out)" : "")")
    }

    private func readLine() throws -> String {
        while true {
            if let i = find([13, 10]) {
                let line = String(decoding: buffer[0..<i], as: UTF8.self)
                buffer.removeFirst(i + 2)
                return line
            }
            guard try fill() else {
                close()
                throw Failure.truncated("in a chunked body")
            }
        }
    }

    private func readBytes(_ n: Int) throws -> [UInt8] {
        while buffer.count < n {
            guard try fill() else {
                close()
                throw Failure.truncated("\(buffer.count) of \(n) bytes")
            }
        }
        let out = Array(buffer[0..<n])
        buffer.removeFirst(n)
        return out
    }
}
