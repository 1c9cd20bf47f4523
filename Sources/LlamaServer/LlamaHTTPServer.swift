import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import LlamaInference
import Logging
import NIOCore
import NIOSSL
import Prometheus

/// The OpenAI- and llama-server-compatible HTTP endpoint in front of a ``CompletionBackend``.
///
/// Routes:
/// - `POST /v1/completions`, `POST /v1/chat/completions` (JSON, or server-sent events with `"stream": true`)
/// - `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text), `GET /status`, `GET /props`, `GET /slots`
/// - `POST /tokenize`, `POST /detokenize` (as llama.cpp's server)
///
/// Bad requests get HTTP 400 with an OpenAI error body naming the field at fault, a missing
/// or wrong API key 401, unknown routes 404, a backend that cannot serve 503 with `Retry-After`.
/// A client that disconnects cancels its job.
public struct LlamaHTTPServer: Sendable {
    /// Limits and defaults of the endpoint.
    public struct Options: Sendable {
        /// Largest request body accepted (HTTP 413 beyond).
        public var maximumRequestBodyBytes: Int
        /// `max_tokens` of `/v1/completions` when the request leaves it out (OpenAI's default is 16).
        public var completionDefaultMaxTokens: Int
        /// `max_tokens` of `/v1/chat/completions` when left out; `nil` means until end-of-text
        /// or the context is full (OpenAI's behaviour).
        public var chatDefaultMaxTokens: Int?
        /// Seconds without text after which a stream gets an SSE comment (`: keep-alive`), so
        /// that a client who left is noticed and its job cancelled.
        public var streamKeepAliveInterval: Double
        /// API keys; when any is set every route but `/health` needs one (`Authorization:
        /// Bearer KEY` or `X-Api-Key: KEY`).
        public var apiKeys: [String]
        /// Seconds a connection may stay idle between requests (and to send a request's
        /// headers) before it is closed.
        public var idleTimeout: Double
        /// Seconds a request body may take to arrive.
        public var bodyReadTimeout: Double
        /// Most connections open at once; more wait in the listen queue.
        public var maximumConnections: Int
        /// TLS on the endpoint (nil: plain HTTP).
        public var tls: TLSConfiguration?

        public init(maximumRequestBodyBytes: Int = 8 << 20, completionDefaultMaxTokens: Int = 16,
                    chatDefaultMaxTokens: Int? = nil, streamKeepAliveInterval: Double = 2, apiKeys: [String] = [],
                    idleTimeout: Double = 30, bodyReadTimeout: Double = 30, maximumConnections: Int = 512,
                    tls: TLSConfiguration? = nil) {
            self.maximumRequestBodyBytes = maximumRequestBodyBytes
            self.completionDefaultMaxTokens = completionDefaultMaxTokens
            self.chatDefaultMaxTokens = chatDefaultMaxTokens
            self.streamKeepAliveInterval = streamKeepAliveInterval
            self.apiKeys = apiKeys
            self.idleTimeout = idleTimeout
            self.bodyReadTimeout = bodyReadTimeout
            self.maximumConnections = maximumConnections
            self.tls = tls
        }
    }

    public let backend: any CompletionBackend
    public var host: String
    public var port: Int
    public var options: Options
    public var logger: Logger
    /// Where `/metrics` reads from (the registry the backend's metrics factory writes to).
    public var metrics: PrometheusCollectorRegistry
    /// The open connections, for cancelling the work of a client that hangs up.
    let connections = ConnectionWatch()

    /// - Parameters:
    ///   - host: address to bind, e.g. "127.0.0.1" or "0.0.0.0".
    ///   - port: TCP port; 0 picks a free one.
    public init(backend: any CompletionBackend, host: String = "127.0.0.1", port: Int = 8080,
                options: Options = Options(), metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                logger: Logger = Logger(label: "llamacluster.http")) {
        self.backend = backend
        self.host = host
        self.port = port
        self.options = options
        self.metrics = metrics
        self.logger = logger
    }

    /// The router with every route, the JSON error handling and the API-key check.
    public func makeRouter() -> Router<LlamaRequestContext> {
        let router = Router(context: LlamaRequestContext.self)
        // Middleware must come first: it wraps the routes added after it and the 404 responder.
        router.add(middleware: JSONErrorMiddleware(logger: logger))
        if !options.apiKeys.isEmpty { router.add(middleware: APIKeyMiddleware(keys: options.apiKeys, open: ["/health"])) }
        let handlers = RouteHandlers(backend: backend, options: options, logger: logger, started: Self.now(), metrics: metrics,
                                     connections: connections)
        router.post("/v1/completions") { request, context in
            try await handlers.withBody(request, context) { try await handlers.respond(try handlers.prepareCompletion($0)) }
        }
        router.post("/v1/chat/completions") { request, context in
            try await handlers.withBody(request, context) { try await handlers.respond(try handlers.prepareChat($0)) }
        }
        router.get("/v1/models") { _, _ in handlers.models() }
        router.get("/health") { _, _ in handlers.health() }
        router.get("/metrics") { _, _ in handlers.metricsText() }
        router.get("/status") { _, _ in handlers.status() }
        router.get("/props") { _, _ in handlers.props() }
        router.get("/slots") { _, _ in handlers.slots() }
        router.post("/tokenize") { request, context in try await handlers.withBody(request, context) { try handlers.tokenize($0) } }
        router.post("/detokenize") { request, context in
            try await handlers.withBody(request, context) { try handlers.detokenize($0) }
        }
        return router
    }

    /// A Hummingbird application serving ``makeRouter()`` on `host:port`.
    public func makeApplication(onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in })
        throws -> some ApplicationProtocol
    {
        let watch = connections
        let http1 = HTTPServerBuilder.http1(configuration: .init(
            additionalChannelHandlers: [ConnectionCloseHandler(watch: watch)],
            idleTimeout: .milliseconds(Int64(options.idleTimeout * 1000))))
        let server = try options.tls.map { try HTTPServerBuilder.tls(http1, tlsConfiguration: $0) } ?? http1
        return Application(
            router: makeRouter(),
            server: server,
            configuration: ApplicationConfiguration(
                address: .hostname(host, port: port), serverName: "llamacluster",
                availableConnectionsDelegate: MaximumAvailableConnections(options.maximumConnections)),
            onServerRunning: onServerRunning,
            logger: logger
        )
    }

    static func now() -> Int { Int(Date().timeIntervalSince1970) }
}

// MARK: - Errors and keys

/// Turns every error into a JSON error response.
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = LlamaRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response
        } catch let error as HTTPError {
            if error.status == .notFound {
                return APIError.notFound("no route for \(request.method) \(request.uri.path)").response
            }
            return APIError(status: error.status.code, message: error.body ?? error.status.reasonPhrase,
                            type: error.status.code < 500 ? "invalid_request_error" : "server_error").response
        } catch let error as any HTTPResponseError {
            return APIError(status: error.status.code, message: error.status.reasonPhrase,
                            type: error.status.code < 500 ? "invalid_request_error" : "server_error").response
        } catch is CancellationError {
            // The client went away; nobody reads this.
            return APIError(status: 499, message: "request cancelled", type: "invalid_request_error").response
        } catch {
            logger.error("internal error on \(request.method) \(request.uri.path): \(error)")
            return APIError.internalError("internal error: \(error)").response
        }
    }
}

/// llama-server's API keys: `Authorization: Bearer KEY` or `X-Api-Key: KEY`, compared in
/// constant time; otherwise 401.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = LlamaRequestContext
    let keys: [[UInt8]]
    let open: Set<String>

    init(keys: [String], open: Set<String>) {
        self.keys = keys.map { Array($0.utf8) }
        self.open = open
    }

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response
    {
        if open.contains(request.uri.path) { return try await next(request, context) }
        var offered: String?
        if let auth = request.headers[.authorization] {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { offered = String(parts[1]).trimmingCharacters(in: .whitespaces) }
        }
        if offered == nil, let name = HTTPField.Name("X-Api-Key"), let v = request.headers[name] { offered = v }
        guard let key = offered else {
            throw APIError.authentication("an API key is required (Authorization: Bearer KEY, or X-Api-Key: KEY)")
        }
        guard Self.matches(Array(key.utf8), keys) else { throw APIError.authentication("invalid API key") }
        return try await next(request, context)
    }

    /// Whether `offered` equals one of `keys`, in time that depends only on the lengths.
    static func matches(_ offered: [UInt8], _ keys: [[UInt8]]) -> Bool {
        var found: UInt8 = 0
        for k in keys {
            var diff = UInt8(truncatingIfNeeded: k.count ^ offered.count)
            for i in 0..<k.count { diff |= k[i] ^ (i < offered.count ? offered[i] : 0) }
            found |= diff == 0 ? 1 : 0
        }
        return found == 1
    }
}

extension APIError {
    /// The error as an HTTP response with a JSON body (and `Retry-After` when it has one).
    var response: Response {
        var r = jsonResponse(json, status: status)
        if let retry = retryAfter { r.headers[.retryAfter] = String(retry) }
        if status == 401 { r.headers[.wwwAuthenticate] = "Bearer" }
        return r
    }
}

func jsonResponse(_ value: JSONValue, status: Int = 200) -> Response {
    Response(
        status: HTTPResponse.Status(code: status),
        headers: [.contentType: "application/json; charset=utf-8"],
        body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized))
    )
}
