import Foundation
import Hummingbird
import LlamaInference
import Logging
import NIOCore
import Prometheus

/// The route handlers, sharing the backend, the options and the chat template.
struct RouteHandlers: Sendable {
    let backend: any CompletionBackend
    let options: LlamaHTTPServer.Options
    let logger: Logger
    let started: Int
    let metrics: PrometheusCollectorRegistry
    let chatTemplate: ChatTemplate
    let chatTemplateRecognised: Bool
    let connections: ConnectionWatch

    init(backend: any CompletionBackend, options: LlamaHTTPServer.Options, logger: Logger, started: Int,
         metrics: PrometheusCollectorRegistry, connections: ConnectionWatch) {
        self.connections = connections
        self.backend = backend
        self.options = options
        self.logger = logger
        self.started = started
        self.metrics = metrics
        (chatTemplate, chatTemplateRecognised) = ChatTemplate.detect(backend.info.chatTemplate)
    }

    // MARK: Request bodies

    /// Reads the body (within the body timeout and size limit) and parses it as JSON, then runs
    /// `body`, cancelled if the client's connection closes meanwhile (a client that hangs up
    /// cancels the work). The connection's request stream is left as it is: the next request
    /// of a keep-alive connection is read from it.
    func withBody(_ request: Request, _ context: LlamaRequestContext,
                  _ body: @escaping @Sendable (JSONValue) async throws -> Response) async throws -> Response {
        let limit = options.maximumRequestBodyBytes, timeout = options.bodyReadTimeout
        let requestBody = request.body
        let buffer: ByteBuffer
        do {
            buffer = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
                group.addTask { try await requestBody.collect(upTo: limit) }
                group.addTask {
                    try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
                    throw APIError(status: 408, message: "the request body did not arrive within \(Int(timeout)) s",
                                   type: "invalid_request_error")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch let error as APIError {
            throw error
        } catch let error as CancellationError {
            throw error
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(status: 413, message: "the request body is larger than \(limit) bytes", type: "invalid_request_error")
        } catch {
            throw APIError.invalidRequest("the request body could not be read: \(error)")
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(buffer.readableBytesView)
        } catch {
            throw APIError.invalidRequest("the request body is not valid JSON: \(error)")
        }
        return try await connections.cancellingOnClose(context.channel) { try await body(json) }
    }

    // MARK: Information

    func models() -> Response {
        let info = backend.info
        return jsonResponse([
            "object": "list",
            "data": [[
                "id": .string(info.name), "object": "model", "created": JSONValue(started), "owned_by": "llamacluster",
                "meta": ["n_ctx": JSONValue(info.contextLength), "n_vocab": JSONValue(info.vocabularySize)],
            ]],
        ])
    }

    func health() -> Response {
        let h = backend.health()
        var members: [(String, JSONValue)] = [
            ("status", .string(h.ready ? (h.draining ? "draining" : "ok") : "unavailable")),
            ("workers", .array(h.workers.filter { !$0.standby }.map(\.json))),
            ("standbys", .array(h.workers.filter(\.standby).map(\.json))),
        ]
        if !h.ready { members.append(("missing", .array(h.missing.map { .string($0) }))) }
        if h.insecure { members.append(("warning", "running without keys on a network address (insecure: true)")) }
        var r = jsonResponse(.object(members), status: h.ready && !h.draining ? 200 : 503)
        if !h.ready || h.draining { r.headers[.retryAfter] = "5" }
        return r
    }

    func metricsText() -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.emitToBuffer())))
    }

    func status() -> Response {
        let h = backend.health()
        return jsonResponse([
            "model": .string(backend.info.name),
            "context_length": JSONValue(backend.info.contextLength),
            "ready": .bool(h.ready),
            "draining": .bool(h.draining),
            "insecure": .bool(h.insecure),
            "workers": .array(h.workers.map(\.json)),
            "metrics": backend.counters().json,
        ])
    }

    func props() -> Response {
        let info = backend.info
        let defaults: [(String, JSONValue)] = [
            ("temperature", 0.8), ("top_k", 40), ("top_p", 0.95), ("min_p", 0.05), ("repeat_penalty", 1.0),
            ("repeat_last_n", 64), ("presence_penalty", 0.0), ("frequency_penalty", 0.0), ("seed", -1),
            ("n_predict", JSONValue(options.completionDefaultMaxTokens)), ("cache_prompt", true),
        ]
        // llama-server nests the sampling defaults under `params` (older versions listed them
        // beside `n_ctx`; both are given).
        return jsonResponse([
            "default_generation_settings": .object([("n_ctx", JSONValue(info.contextLength)), ("params", .object(defaults))] + defaults),
            "total_slots": JSONValue(info.slotCount),
            "model_path": .string(info.path),
            "chat_template": .string(chatTemplate.rawValue + (chatTemplateRecognised ? "" : " (default: the GGUF has no template this server recognises)")),
            "chat_template_source": JSONValue(info.chatTemplate),
            "stages": .string(backend.stageSummary),
            "build_info": .string("llamacluster \(BuildInfo.version)"),
            "n_vocab": JSONValue(info.vocabularySize),
        ])
    }

    func slots() -> Response {
        let stages = backend.stageSummary
        return jsonResponse(.array(backend.slots().map { s in
            [
                "id": JSONValue(s.id), "n_ctx": JSONValue(s.contextLength), "is_processing": .bool(s.isProcessing),
                "n_cached_tokens": JSONValue(s.cachedTokens), "id_task": s.requestID.map { JSONValue($0) } ?? .null,
                "stages": .string(stages),
            ]
        }))
    }

    // MARK: Tokens

    func tokenize(_ json: JSONValue) throws -> Response {
        let fields = try RequestFields(json)
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
            withPieces ? ["id": JSONValue(Int(id)), "piece": .string(backend.detokenize([id]))] : JSONValue(Int(id))
        }
        return jsonResponse(["tokens": .array(list)])
    }

    func detokenize(_ json: JSONValue) throws -> Response {
        let fields = try RequestFields(json)
        guard let tokensValue = fields.value("tokens") else {
            throw APIError.invalidRequest("'tokens' is required", param: "tokens")
        }
        guard case let .array(elements) = tokensValue else {
            throw APIError.invalidRequest("'tokens' must be an array of token ids, not \(tokensValue.typeName)", param: "tokens")
        }
        let limit = Int64(backend.info.vocabularySize)
        let ids: [Int32] = try elements.enumerated().map { index, element in
            guard let value = element.integerValue, value >= 0, value < limit, let id = Int32(exactly: value) else {
                throw APIError.invalidRequest(
                    "tokens[\(index)] must be a token id (an integer in 0..<\(limit)), not \(element.serialized)", param: "tokens")
            }
            return id
        }
        return jsonResponse(["content": .string(backend.detokenize(ids))])
    }
}

/// The version the build reports in `/props`.
public enum BuildInfo {
    public static let version = "0.3"
}
