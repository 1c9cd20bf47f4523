import Foundation
import Hummingbird
import LlamaSampling
import Logging

/// The OpenAI-compatible HTTP endpoint in front of a ``CompletionBackend``.
///
/// Routes:
/// - `POST /v1/completions`, `POST /v1/chat/completions` (JSON, or server-sent events with `"stream": true`)
/// - `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text), `GET /status`
/// - `POST /tokenize`, `POST /detokenize` (as llama.cpp's server)
///
/// Bad requests get HTTP 400 with an OpenAI error body naming the field at fault, unknown
/// routes 404, a failing backend 503. A client that disconnects cancels its job.
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

        public init(maximumRequestBodyBytes: Int = 8 << 20, completionDefaultMaxTokens: Int = 16,
                    chatDefaultMaxTokens: Int? = nil, streamKeepAliveInterval: Double = 2) {
            self.maximumRequestBodyBytes = maximumRequestBodyBytes
            self.completionDefaultMaxTokens = completionDefaultMaxTokens
            self.chatDefaultMaxTokens = chatDefaultMaxTokens
            self.streamKeepAliveInterval = streamKeepAliveInterval
        }
    }

    public let backend: any CompletionBackend
    public var host: String
    public var port: Int
    public var options: Options
    public var logger: Logger

    /// - Parameters:
    ///   - host: address to bind, e.g. "127.0.0.1" or "0.0.0.0".
    ///   - port: TCP port; 0 picks a free one.
    public init(backend: any CompletionBackend, host: String = "127.0.0.1", port: Int = 8080,
                options: Options = Options(), logger: Logger = Logger(label: "llamacluster.http")) {
        self.backend = backend
        self.host = host
        self.port = port
        self.options = options
        self.logger = logger
    }

    /// The router with every route and the JSON error handling.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        // Middleware must come first: it wraps the routes added after it and the 404 responder.
        router.add(middleware: JSONErrorMiddleware(logger: logger))
        let handlers = RouteHandlers(backend: backend, options: options, logger: logger, started: Self.now())
        router.post("/v1/completions") { request, _ in try await handlers.completion(request) }
        router.post("/v1/chat/completions") { request, _ in try await handlers.chatCompletion(request) }
        router.get("/v1/models") { _, _ in handlers.models() }
        router.get("/health") { _, _ in handlers.health() }
        router.get("/metrics") { _, _ in handlers.metrics() }
        router.get("/status") { _, _ in handlers.status() }
        router.post("/tokenize") { request, _ in try await handlers.tokenize(request) }
        router.post("/detokenize") { request, _ in try await handlers.detokenize(request) }
        return router
    }

    /// A Hummingbird application serving ``makeRouter()`` on `host:port`.
    public func makeApplication() -> Application<RouterResponder<BasicRequestContext>> {
        Application(
            router: makeRouter(),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "llamacluster"),
            logger: logger
        )
    }

    /// Serves until SIGINT or SIGTERM.
    public func run() async throws {
        try await makeApplication().runService()
    }

    static func now() -> Int { Int(Date().timeIntervalSince1970) }
}

// MARK: - Errors

/// Turns every error into a JSON error response.
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
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

extension APIError {
    /// The error as an HTTP response with a JSON body.
    var response: Response {
        jsonResponse(json, status: status)
    }
}

func jsonResponse(_ value: JSONValue, status: Int = 200) -> Response {
    Response(
        status: HTTPResponse.Status(code: status),
        headers: [.contentType: "application/json; charset=utf-8"],
        body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized))
    )
}

// MARK: - Generation

/// Why a job could not be run to its end.
enum GenerationFailure: Error {
    /// The backend's stream threw.
    case backend(any Error)
    /// The backend's stream ended without `.finished`.
    case endedWithoutFinish

    var apiError: APIError {
        switch self {
        case let .backend(error as APIError):
            return error
        case let .backend(error):
            return .unavailable("generation failed: \(error)")
        case .endedWithoutFinish:
            return .internalError("the model runner ended the job without reporting how it finished")
        }
    }
}

struct GenerationResult {
    var finishReason: FinishReason
    var usage: CompletionUsage
}

// MARK: - Handlers

struct RouteHandlers: Sendable {
    let backend: any CompletionBackend
    let options: LlamaHTTPServer.Options
    let logger: Logger
    let started: Int

    // MARK: Request bodies

    /// Reads and parses a JSON request body.
    func readJSON(_ body: RequestBody) async throws -> JSONValue {
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: options.maximumRequestBodyBytes)
        } catch let error as CancellationError {
            throw error
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(status: 413, message: "the request body is larger than \(options.maximumRequestBodyBytes) bytes",
                           type: "invalid_request_error")
        } catch {
            throw APIError.invalidRequest("the request body could not be read: \(error)")
        }
        do {
            return try JSONValue.parse(buffer.readableBytesView)
        } catch let error as JSONParseError {
            throw APIError.invalidRequest("the request body is not valid JSON: \(error)")
        }
    }

    // MARK: Completions

    func completion(_ request: Request) async throws -> Response {
        // Reading the body inside this call lets it cancel the work if the client closes the
        // connection before the answer is ready.
        try await request.body.consumeWithCancellationOnInboundClose { body in
            let parsed = try CompletionRequest(json: try await readJSON(body))
            let promptTokens = backend.tokenize(parsed.prompt, addBOS: true)
            let job = try makeJob(promptTokens: promptTokens, settings: parsed.settings,
                                  defaultMaxTokens: options.completionDefaultMaxTokens, promptParam: "prompt")
            let format = ResponseFormat(kind: .completion, model: backend.modelName, created: LlamaHTTPServer.now())
            return try await respond(job: job, settings: parsed.settings, format: format)
        }
    }

    func chatCompletion(_ request: Request) async throws -> Response {
        try await request.body.consumeWithCancellationOnInboundClose { body in
            let parsed = try ChatCompletionRequest(json: try await readJSON(body))
            let backend = self.backend
            let promptTokens = try Llama2ChatTemplate.promptTokens(
                parsed.messages, bos: backend.bosID, eos: backend.eosID,
                tokenize: { backend.tokenize($0, addBOS: false) })
            let job = try makeJob(promptTokens: promptTokens, settings: parsed.settings,
                                  defaultMaxTokens: options.chatDefaultMaxTokens, promptParam: "messages")
            let format = ResponseFormat(kind: .chat, model: backend.modelName, created: LlamaHTTPServer.now())
            return try await respond(job: job, settings: parsed.settings, format: format)
        }
    }

    /// A job whose prompt fits the context, with `max_tokens` clamped to the room left.
    func makeJob(promptTokens: [Int32], settings: GenerationSettings, defaultMaxTokens: Int?,
                 promptParam: String) throws -> CompletionJob
    {
        let contextLength = backend.contextLength
        guard promptTokens.count < contextLength else {
            throw APIError.invalidRequest(
                "the prompt is \(promptTokens.count) tokens long but the context holds \(contextLength) "
                    + "positions; it must be shorter than the context to leave room for the completion",
                param: promptParam)
        }
        let room = contextLength - promptTokens.count
        let maxTokens = min(settings.maxTokens ?? defaultMaxTokens ?? room, room)
        return CompletionJob(promptTokens: promptTokens, parameters: settings.parameters, maxTokens: maxTokens)
    }

    /// Runs the job: a whole JSON answer, or a stream of server-sent events.
    func respond(job: CompletionJob, settings: GenerationSettings, format: ResponseFormat) async throws -> Response {
        if settings.stream {
            return streamingResponse(job: job, stop: settings.stop, format: format)
        }
        var text = ""
        let result: GenerationResult
        do {
            result = try await run(job, stop: settings.stop) { text += $0 }
        } catch let failure as GenerationFailure {
            logger.warning("completion failed: \(failure)")
            throw failure.apiError
        }
        return jsonResponse(format.whole(text: text, finishReason: result.finishReason, usage: result.usage))
    }

    /// Runs `job`, passing released text (stop strings cut out) to `onText`.
    ///
    /// Returning or throwing drops the backend's stream, which cancels the job if it is still running.
    /// - Throws: ``GenerationFailure`` for backend problems, `CancellationError` when cancelled,
    ///   or whatever `onText` throws.
    func run(_ job: CompletionJob, stop: [String], onText: (String) async throws -> Void) async throws
        -> GenerationResult
    {
        if job.maxTokens == 0 {
            return GenerationResult(finishReason: .length,
                                    usage: CompletionUsage(promptTokens: job.promptTokens.count, completionTokens: 0))
        }
        var filter = StopStringFilter(stopStrings: stop)
        var generated = 0
        var iterator = backend.submit(job).makeAsyncIterator()
        while true {
            let event: CompletionEvent?
            do {
                event = try await iterator.next()
            } catch {
                if error is CancellationError || Task.isCancelled { throw CancellationError() }
                throw GenerationFailure.backend(error)
            }
            guard let event else {
                if Task.isCancelled { throw CancellationError() }
                throw GenerationFailure.endedWithoutFinish
            }
            switch event {
            case let .token(_, text):
                generated += 1
                let released = filter.append(text)
                if !released.isEmpty { try await onText(released) }
                if filter.isStopped {
                    return GenerationResult(
                        finishReason: .stop,
                        usage: CompletionUsage(promptTokens: job.promptTokens.count, completionTokens: generated))
                }
            case let .finished(reason, promptTokens, completionTokens):
                let rest = filter.flush()
                if !rest.isEmpty { try await onText(rest) }
                logger.debug("completion finished: \(reason.rawValue), \(promptTokens) + \(completionTokens) tokens")
                return GenerationResult(
                    finishReason: reason,
                    usage: CompletionUsage(promptTokens: promptTokens, completionTokens: completionTokens))
            }
        }
    }

    /// What the generation task hands to the task writing the stream.
    enum StreamItem: Sendable {
        case text(String)
        case finished(FinishReason, CompletionUsage)
        case failed(APIError)
        case keepAlive
    }

    /// Server-sent events: one `data: {chunk}` per piece of text, a final chunk with the
    /// finish reason and usage, then `data: [DONE]`. A backend failure is sent as
    /// `data: {"error": ...}` and ends the stream.
    ///
    /// While no text arrives (a long prompt, a queue), an SSE comment line is sent every
    /// ``LlamaHTTPServer/Options/streamKeepAliveInterval`` seconds: writing is how a closed
    /// connection is noticed, and a failed write cancels the job.
    func streamingResponse(job: CompletionJob, stop: [String], format: ResponseFormat) -> Response {
        let generator = self
        let keepAliveNanoseconds = UInt64(max(options.streamKeepAliveInterval, 0.001) * 1e9)
        let body = ResponseBody { writer in
            let (items, itemSink) = AsyncStream<StreamItem>.makeStream()
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            let result = try await generator.run(job, stop: stop) { itemSink.yield(.text($0)) }
                            itemSink.yield(.finished(result.finishReason, result.usage))
                        } catch let failure as GenerationFailure {
                            generator.logger.warning("streamed completion failed: \(failure)")
                            itemSink.yield(.failed(failure.apiError))
                        }
                        itemSink.finish()
                    }
                    group.addTask {
                        while true {
                            try await Task.sleep(nanoseconds: keepAliveNanoseconds)
                            itemSink.yield(.keepAlive)
                        }
                    }
                    if let opening = format.openingChunk() {
                        try await writer.write(ByteBuffer(string: "data: \(opening.serialized)\n\n"))
                    }
                    var wroteSinceKeepAlive = true
                    streaming: for await item in items {
                        switch item {
                        case let .text(text):
                            try await writer.write(ByteBuffer(string: "data: \(format.textChunk(text).serialized)\n\n"))
                            wroteSinceKeepAlive = true
                        case let .finished(reason, usage):
                            let final = format.finalChunk(finishReason: reason, usage: usage).serialized
                            try await writer.write(ByteBuffer(string: "data: \(final)\n\ndata: [DONE]\n\n"))
                            break streaming
                        case let .failed(error):
                            try await writer.write(ByteBuffer(string: "data: \(error.json.serialized)\n\n"))
                            break streaming
                        case .keepAlive:
                            if !wroteSinceKeepAlive {
                                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            }
                            wroteSinceKeepAlive = false
                        }
                    }
                    // Stops the keep-alive ticks, and the job if the stream ended early.
                    group.cancelAll()
                }
                try await writer.finish(nil)
            } catch {
                // A write failed: the client went away. Leaving the task group cancelled the job.
                generator.logger.debug("stream ended early: \(error)")
            }
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: body
        )
    }

    // MARK: Information

    func models() -> Response {
        jsonResponse([
            "object": "list",
            "data": [[
                "id": .string(backend.modelName),
                "object": "model",
                "created": JSONValue(started),
                "owned_by": "llamacluster",
                "meta": ["n_ctx": JSONValue(backend.contextLength)],
            ]],
        ])
    }

    func health() -> Response {
        let (ready, workers) = backend.health()
        let workerList = JSONValue.array(workers.map(\.json))
        if ready {
            return jsonResponse(["status": "ok", "workers": workerList])
        }
        let missing = workers.filter { $0.state != "ready" }.map { JSONValue.string($0.name) }
        return jsonResponse(["status": "unavailable", "missing": .array(missing), "workers": workerList], status: 503)
    }

    func metrics() -> Response {
        let text = PrometheusExposition.render(metrics: backend.metrics(), workers: backend.health().workers)
        return Response(
            status: .ok,
            headers: [.contentType: PrometheusExposition.contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text))
        )
    }

    func status() -> Response {
        let (ready, workers) = backend.health()
        return jsonResponse([
            "model": .string(backend.modelName),
            "context_length": JSONValue(backend.contextLength),
            "ready": .bool(ready),
            "workers": .array(workers.map(\.json)),
            "metrics": backend.metrics().json,
        ])
    }

    // MARK: Tokens

    func tokenize(_ request: Request) async throws -> Response {
        let fields = try RequestFields(try await readJSON(request.body))
        guard let contentValue = fields.value("content") else {
            throw APIError.invalidRequest("'content' is required", param: "content")
        }
        guard case let .string(content) = contentValue else {
            throw APIError.invalidRequest("'content' must be a string, not \(contentValue.typeName)", param: "content")
        }
        let addSpecial = try fields.bool("add_special") ?? false
        let withPieces = try fields.bool("with_pieces") ?? false
        let tokens = backend.tokenize(content, addBOS: addSpecial)
        let list: [JSONValue] = tokens.map { id in
            withPieces
                ? ["id": JSONValue(Int(id)), "piece": .string(backend.detokenize([id]))]
                : JSONValue(Int(id))
        }
        return jsonResponse(["tokens": .array(list)])
    }

    func detokenize(_ request: Request) async throws -> Response {
        let fields = try RequestFields(try await readJSON(request.body))
        guard let tokensValue = fields.value("tokens") else {
            throw APIError.invalidRequest("'tokens' is required", param: "tokens")
        }
        guard case let .array(elements) = tokensValue else {
            throw APIError.invalidRequest("'tokens' must be an array of token ids, not \(tokensValue.typeName)",
                                          param: "tokens")
        }
        let limit = backend.vocabularySize.map { Int64($0) } ?? Int64(Int32.max) + 1
        let ids: [Int32] = try elements.enumerated().map { index, element in
            guard let value = element.integerValue, value >= 0, value < limit, let id = Int32(exactly: value) else {
                throw APIError.invalidRequest(
                    "tokens[\(index)] must be a token id (an integer in 0..<\(limit)), not \(element.serialized)",
                    param: "tokens")
            }
            return id
        }
        return jsonResponse(["content": .string(backend.detokenize(ids))])
    }
}
