import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

// How requests travel
// -------------------
// Every call (a completion, a status, one `request`) makes its own `HTTPClient` on
// AsyncHTTPClient's default event loop group, which is NIO's process-wide singleton group (its
// threads start on first use and live as long as the process; no call creates or leaks an event
// loop), and shuts that client down before it returns, on every path. Per call rather than one
// shared client because the timeouts and the trusted CA are client settings in AsyncHTTPClient,
// and because shutting the client down is what guarantees that a stream given up half way closes
// its connection (which is how the server learns to cancel the job). The price is one connection
// per call.
//
// The async functions use AsyncHTTPClient's async API (`execute(_:deadline:)` and the response
// body as an `AsyncSequence`); see the end of this file.
//
// The blocking functions do not wrap the async ones: they use AsyncHTTPClient's event-loop API
// with a response delegate that hands each body piece to the calling thread (see
// `BlockingTransport.swift`). They must not be called on a NIO event loop thread.

/// Settings one call shares across its requests.
struct CallSettings: Sendable {
    var timeouts: ClientTimeouts
    var apiKey: String?
    var caCertificateFile: String?
}

/// One request, checked and ready to send.
struct OutgoingRequest: Sendable {
    var method: HTTPMethod
    var url: EndpointURL
    var headers: HTTPHeaders
    var body: [UInt8]?
    var settings: CallSettings

    /// Checks the method, header fields and timeouts; adds `User-Agent`, `Content-Type:
    /// application/json` for a body and `Authorization: Bearer KEY` for an API key, unless
    /// `headers` set them.
    init(method: String, url: EndpointURL, body: [UInt8]?, headers: [String: String], settings: CallSettings) throws {
        guard !method.isEmpty, method.utf8.allSatisfy(isTokenByte) else {
            throw LlamaClientError.invalidArgument("method '\(method)' is not an HTTP token")
        }
        _ = try Self.amount(settings.timeouts.connect, "connect")
        _ = try Self.amount(settings.timeouts.read, "read")
        if let total = settings.timeouts.total { _ = try Self.amount(total, "total") }
        self.method = HTTPMethod(rawValue: method.uppercased())
        self.url = url
        self.body = body
        self.settings = settings
        var fields = HTTPHeaders()
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte),
                  !value.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" })
            else { throw LlamaClientError.invalidArgument("header '\(name)' is not a token or its value holds a line break") }
            fields.add(name: name, value: value)
        }
        if !fields.contains(name: "User-Agent") { fields.add(name: "User-Agent", value: "llamacluster-client") }
        if body != nil, !fields.contains(name: "Content-Type") { fields.add(name: "Content-Type", value: "application/json") }
        if let key = settings.apiKey, !fields.contains(name: "Authorization") {
            guard !key.isEmpty, !key.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                throw LlamaClientError.invalidArgument("the API key is empty or holds a line break")
            }
            fields.add(name: "Authorization", value: "Bearer \(key)")
        }
        self.headers = fields
    }

    /// A client for this request alone; the caller shuts it down.
    func makeClient() throws -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let read = try Self.amount(settings.timeouts.read, "read")
        configuration.timeout = .init(connect: try Self.amount(settings.timeouts.connect, "connect"), read: read,
                                      write: read)
        // Fail at the first refused connection instead of retrying until the connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        configuration.decompression = .disabled
        if url.isHTTPS {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let file = settings.caCertificateFile {
                guard FileManager.default.isReadableFile(atPath: file) else {
                    throw LlamaClientError.invalidArgument("the CA certificate file '\(file)' does not exist or cannot be read")
                }
                do {
                    let certificates = try NIOSSLCertificate.fromPEMFile(file)
                    guard !certificates.isEmpty else {
                        throw LlamaClientError.invalidArgument("the CA certificate file '\(file)' holds no PEM certificate")
                    }
                    tls.additionalTrustRoots = [.certificates(certificates)]
                } catch let error as LlamaClientError {
                    throw error
                } catch {
                    throw LlamaClientError.invalidArgument("the CA certificate file '\(file)' is not PEM: \(error)")
                }
            }
            configuration.tlsConfiguration = tls
        }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// The point in time the whole request must be done by (nil: no total limit).
    var deadline: NIODeadline? {
        settings.timeouts.total.flatMap { try? Self.amount($0, "total") }.map { .now() + $0 }
    }

    private static func amount(_ seconds: Double, _ name: String) throws -> TimeAmount {
        guard seconds.isFinite, seconds > 0 else {
            throw LlamaClientError.invalidArgument("the \(name) timeout must be a positive number of seconds, not \(seconds)")
        }
        return .nanoseconds(Int64(min(seconds, 1e9) * 1e9))
    }

    /// The request for AsyncHTTPClient's async API.
    var asyncRequest: HTTPClientRequest {
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        request.headers = headers
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        return request
    }

    /// `error` from AsyncHTTPClient, NIO or TLS as a ``LlamaClientError`` that names the peer.
    func transportError(_ error: Error) -> Error {
        let peer = url.peer
        let timeouts = settings.timeouts
        switch error {
        case is LlamaClientError, is CancellationError:
            return error
        case let error as HTTPClientError:
            switch error {
            case .connectTimeout, .tlsHandshakeTimeout:
                return LlamaClientError.timedOut("connecting to \(peer) took longer than \(timeouts.connect) s")
            case .readTimeout:
                return LlamaClientError.timedOut("no data from \(peer) for \(timeouts.read) s")
            case .writeTimeout:
                return LlamaClientError.timedOut("\(peer) did not take the request within \(timeouts.read) s")
            case .deadlineExceeded:
                return LlamaClientError.timedOut("the request to \(peer) took longer than \(timeouts.total ?? 0) s")
            case .remoteConnectionClosed:
                return LlamaClientError.connectionFailed("\(peer) closed the connection before the response was complete")
            case .invalidURL, .emptyHost, .emptyScheme:
                return LlamaClientError.invalidURL("'\(url.absoluteString)': \(error)")
            case .cancelled:
                return CancellationError()
            case .bodyLengthMismatch, .identityCodingIncorrectlyPresent, .contentLengthMissing:
                return LlamaClientError.malformedResponse("from \(peer): \(error)")
            default:
                return LlamaClientError.connectionFailed("\(peer): \(error)")
            }
        case let error as NIOConnectionError:
            if let dns = error.dnsAError ?? error.dnsAAAAError {
                return LlamaClientError.connectionFailed("cannot resolve the host of \(peer): \(dns)")
            }
            let causes = error.connectionErrors.map(\.error)
            if !causes.isEmpty, causes.allSatisfy(isConnectionRefused) {
                return LlamaClientError.connectionFailed("connection refused by \(peer) (is the endpoint running?)")
            }
            if causes.isEmpty {
                return LlamaClientError.connectionFailed("cannot resolve the host of \(peer): no address")
            }
            return LlamaClientError.connectionFailed("cannot connect to \(peer): \(causes.map { "\($0)" }.joined(separator: "; "))")
        case let error as ChannelError:
            if case .connectTimeout = error {
                return LlamaClientError.timedOut("connecting to \(peer) took longer than \(timeouts.connect) s")
            }
            return LlamaClientError.connectionFailed("\(peer): \(error)")
        case let error as IOError where isConnectionRefused(error):
            return LlamaClientError.connectionFailed("connection refused by \(peer) (is the endpoint running?)")
        case is HTTPParserError:
            return LlamaClientError.malformedResponse("\(peer) sent malformed HTTP: \(error)")
        case is NIOSSLError, is BoringSSLError, is NIOSSLExtraError:
            if "\(error)".contains("CERTIFICATE_VERIFY_FAILED") {
                return LlamaClientError.connectionFailed(
                    "TLS with \(peer) failed: its certificate is not signed by a trusted CA (give the CA certificate to trust): \(error)")
            }
            return LlamaClientError.connectionFailed("TLS with \(peer) failed: \(error)")
        case is NIOTooManyBytesError:
            return LlamaClientError.malformedResponse("the body from \(peer) is larger than \(bodyLimit) bytes")
        default:
            // Reset connections and other socket errors (IOError).
            return LlamaClientError.connectionFailed("cannot reach \(peer): \(error)")
        }
    }
}

private func isConnectionRefused(_ error: Error) -> Bool {
    (error as? IOError)?.errnoCode == ECONNREFUSED
}

/// Largest body read whole (`request`, error replies).
let bodyLimit = 64 << 20

/// The `error.message` of an OpenAI-style error body, or the start of the body itself.
func errorMessage(from body: [UInt8]) -> String {
    if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
        if let error = object["error"] as? [String: Any], let message = error["message"] as? String {
            return message
        }
        if let message = object["error"] as? String { return message }
    }
    let text = String(decoding: body.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    return text.isEmpty ? "(no body)" : text
}

/// RFC 9110 token characters (methods, header names).
private func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a") ... UInt8(ascii: "z"), UInt8(ascii: "A") ... UInt8(ascii: "Z"), UInt8(ascii: "0") ... UInt8(ascii: "9"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }
}

extension HTTPHeaders {
    /// The fields with names in lower case, as ``HTTPClientResponse`` keeps them.
    var lowercasedFields: [(name: String, value: String)] {
        map { (name: $0.name.lowercased(), value: $0.value) }
    }
}

// MARK: - Async transport

/// Sends `request` with a client of its own and runs `body` with the response; the client is
/// shut down (closing the connection, so an unfinished stream is cancelled) whatever `body` does.
/// Errors of the transport come out as ``LlamaClientError``; errors `body` throws come out as they are.
///
/// AsyncHTTPClient's `deadline` ends only the wait for the response head, so a total timeout
/// also shuts the client down when it passes; the body then fails, and the call throws
/// ``LlamaClientError/timedOut(_:)``.
func withResponse<T>(_ request: OutgoingRequest,
                     _ body: (AsyncHTTPClient.HTTPClientResponse) async throws -> T) async throws -> T
{
    let client = try request.makeClient()
    let expired = DeadlineFlag()
    let deadline = request.deadline
    let timer = deadline.map { deadline in
        client.eventLoopGroup.any().scheduleTask(deadline: deadline) {
            expired.fire()
            client.shutdown(queue: .global()) { _ in }
        }
    }
    let result: Result<T, Error>
    do {
        let response: AsyncHTTPClient.HTTPClientResponse
        do {
            response = try await client.execute(request.asyncRequest, deadline: deadline ?? .distantFuture)
        } catch {
            throw request.transportError(error)
        }
        result = .success(try await body(response))
    } catch {
        result = .failure(expired.hasFired && !(error is CancellationError && Task.isCancelled)
            ? LlamaClientError.timedOut(
                "the request to \(request.url.peer) took longer than \(request.settings.timeouts.total ?? 0) s")
            : error)
    }
    timer?.cancel()
    // The only error `shutdown()` throws is `alreadyShutdown`: the total timeout shut it down.
    try? await client.shutdown()
    return try result.get()
}

/// Whether a call's total timeout has passed; set on an event loop, read by the calling task.
private final class DeadlineFlag: Sendable {
    private let fired = Mutex(false)

    func fire() { fired.withLock { $0 = true } }
    var hasFired: Bool { fired.withLock { $0 } }
}

/// Pieces of a response body, with transport errors as ``LlamaClientError``.
struct BodyPieces {
    private var iterator: AsyncHTTPClient.HTTPClientResponse.Body.AsyncIterator
    private let request: OutgoingRequest

    init(_ response: AsyncHTTPClient.HTTPClientResponse, of request: OutgoingRequest) {
        iterator = response.body.makeAsyncIterator()
        self.request = request
    }

    mutating func next() async throws -> ByteBuffer? {
        do {
            return try await iterator.next()
        } catch {
            throw request.transportError(error)
        }
    }

    /// The rest of the body, at most `limit` bytes.
    mutating func readAll(limit: Int = bodyLimit) async throws -> [UInt8] {
        var body: [UInt8] = []
        while let chunk = try await next() {
            guard body.count + chunk.readableBytes <= limit else {
                throw LlamaClientError.malformedResponse("the body from \(request.url.peer) is larger than \(limit) bytes")
            }
            body.append(contentsOf: chunk.readableBytesView)
        }
        return body
    }
}
