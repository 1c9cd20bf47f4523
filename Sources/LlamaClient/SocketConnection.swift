#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A blocking TCP connection with connect and read timeouts, buffered for line reading.
///
/// The socket is non-blocking underneath; every wait goes through `poll` with the timeout,
/// so no call can hang longer than the timeout allows.
final class SocketConnection {
    private let fd: Int32
    private let readTimeout: Double
    private let peer: String
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    private var reachedEnd = false

    /// Longest header or SSE line accepted.
    static let maximumLineBytes = 1 << 20

    /// Connects to `host:port`, trying each address the name resolves to.
    init(host: String, port: Int, connectTimeout: Double, readTimeout: Double) throws {
        self.readTimeout = readTimeout
        peer = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"

        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Darwin)
        hints.ai_socktype = SOCK_STREAM
        #else
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #endif
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw LlamaClientError.connectionFailed("cannot resolve host '\(host)': \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }

        var lastError = "no address"
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let info = candidate {
            candidate = info.pointee.ai_next
            let socketFD = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if socketFD < 0 {
                lastError = SocketConnection.errnoText()
                continue
            }
            do {
                try SocketConnection.connect(socketFD, info.pointee.ai_addr, info.pointee.ai_addrlen,
                                             timeout: connectTimeout)
                fd = socketFD
                return
            } catch let error as LlamaClientError {
                close(socketFD)
                lastError = error.detail
            }
        }
        throw LlamaClientError.connectionFailed("cannot connect to \(peer): \(lastError)")
    }

    deinit {
        close(fd)
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }

    private static func connect(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: socklen_t,
                                timeout: Double) throws
    {
        let flags = fcntl(fd, F_GETFL, 0)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw LlamaClientError.connectionFailed(errnoText())
        }
        #if canImport(Darwin)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        if systemConnect(fd, address, length) == 0 { return }
        guard errno == EINPROGRESS else { throw LlamaClientError.connectionFailed(errnoText()) }
        guard try waitFor(fd, events: Int16(POLLOUT), timeout: timeout) else {
            throw LlamaClientError.timedOut("connecting took longer than \(timeout) s")
        }
        var socketError: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &size)
        guard socketError == 0 else {
            throw LlamaClientError.connectionFailed(String(cString: strerror(socketError)))
        }
    }

    /// Polls `fd` for `events`; false on timeout.
    private static func waitFor(_ fd: Int32, events: Int16, timeout: Double) throws -> Bool {
        var descriptor = pollfd(fd: fd, events: events, revents: 0)
        let deadline = monotonicSeconds() + timeout
        while true {
            let remaining = deadline - monotonicSeconds()
            if remaining <= 0 { return false }
            let milliseconds = Int32(min(remaining * 1000, Double(Int32.max)).rounded(.up))
            let result = poll(&descriptor, 1, milliseconds)
            if result > 0 { return true }
            if result == 0 { continue }
            if errno == EINTR { continue }
            throw LlamaClientError.connectionFailed(errnoText())
        }
    }

    private static func monotonicSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    // MARK: - Writing

    /// Sends all of `bytes`.
    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            #if canImport(Darwin)
            let flags: Int32 = 0
            #else
            let flags = Int32(MSG_NOSIGNAL)
            #endif
            let sent = bytes.withUnsafeBytes { raw in
                systemSend(fd, raw.baseAddress! + offset, bytes.count - offset, flags)
            }
            if sent > 0 {
                offset += sent
            } else if sent < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR {
                guard try SocketConnection.waitFor(fd, events: Int16(POLLOUT), timeout: readTimeout) else {
                    throw LlamaClientError.timedOut("\(peer) did not accept data for \(readTimeout) s")
                }
            } else {
                throw LlamaClientError.connectionFailed("sending to \(peer) failed: \(SocketConnection.errnoText())")
            }
        }
    }

    // MARK: - Reading

    /// Reads more bytes into the buffer; false at end of stream.
    private func fill() throws -> Bool {
        if reachedEnd { return false }
        if bufferStart > 0, bufferStart == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            bufferStart = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let received = chunk.withUnsafeMutableBytes { raw in
                recv(fd, raw.baseAddress!, raw.count, 0)
            }
            if received > 0 {
                buffer.append(contentsOf: chunk[0 ..< received])
                return true
            }
            if received == 0 {
                reachedEnd = true
                return false
            }
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR {
                guard try SocketConnection.waitFor(fd, events: Int16(POLLIN), timeout: readTimeout) else {
                    throw LlamaClientError.timedOut("no data from \(peer) for \(readTimeout) s")
                }
                continue
            }
            throw LlamaClientError.connectionFailed("reading from \(peer) failed: \(SocketConnection.errnoText())")
        }
    }

    /// The next line without its CR LF (or LF); `nil` at end of stream with nothing buffered.
    func readLine() throws -> [UInt8]? {
        var scanned = 0  // bytes after bufferStart already searched (the buffer may be compacted by fill)
        while true {
            if let newline = buffer[(bufferStart + scanned)...].firstIndex(of: 0x0A) {
                var end = newline
                if end > bufferStart, buffer[end - 1] == 0x0D { end -= 1 }
                let line = Array(buffer[bufferStart ..< end])
                bufferStart = newline + 1
                return line
            }
            scanned = buffer.count - bufferStart
            if buffer.count - bufferStart > SocketConnection.maximumLineBytes {
                throw LlamaClientError.malformedResponse("a line from \(peer) is longer than \(SocketConnection.maximumLineBytes) bytes")
            }
            guard try fill() else {
                if bufferStart == buffer.count { return nil }
                let line = Array(buffer[bufferStart...])
                bufferStart = buffer.count
                return line
            }
        }
    }

    /// Up to `maximum` bytes, at least one unless the stream has ended (then empty).
    func readSome(maximum: Int) throws -> [UInt8] {
        if bufferStart == buffer.count {
            guard try fill() else { return [] }
        }
        let count = min(maximum, buffer.count - bufferStart)
        let bytes = Array(buffer[bufferStart ..< bufferStart + count])
        bufferStart += count
        return bytes
    }

    /// Exactly `count` bytes.
    func readExactly(_ count: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            let part = try readSome(maximum: count - bytes.count)
            if part.isEmpty {
                throw LlamaClientError.malformedResponse("\(peer) closed the connection in the middle of the body")
            }
            bytes.append(contentsOf: part)
        }
        return bytes
    }
}

// The C socket calls under names that do not clash with methods of this file.
#if canImport(Darwin)
private let systemConnect = Darwin.connect
private let systemSend = Darwin.send
#elseif canImport(Musl)
private let systemConnect = Musl.connect
private let systemSend = Musl.send
#else
private let systemConnect = Glibc.connect
private let systemSend = Glibc.send
#endif
