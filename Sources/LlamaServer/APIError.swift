import LlamaInference

/// An error the endpoint answers with an OpenAI-style body:
/// `{"error": {"message": ..., "type": ..., "param": ..., "code": null}}`.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// HTTP status code.
    public var status: Int
    /// What went wrong, fit to show a user.
    public var message: String
    /// OpenAI error type: `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `unavailable_error`, `server_error`.
    public var type: String
    /// The request field at fault, if one is.
    public var param: String?
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    public var retryAfter: Int?

    public init(status: Int, message: String, type: String, param: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.retryAfter = retryAfter
    }

    /// HTTP 400: the request is malformed or a value is out of range.
    public static func invalidRequest(_ message: String, param: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param)
    }

    /// HTTP 401: no API key, or a wrong one.
    public static func authentication(_ message: String) -> APIError {
        APIError(status: 401, message: message, type: "authentication_error")
    }

    /// HTTP 404: no such route.
    public static func notFound(_ message: String) -> APIError {
        APIError(status: 404, message: message, type: "not_found_error")
    }

    /// HTTP 503: the model runner cannot serve the request now.
    public static func unavailable(_ message: String, retryAfter: Int? = nil) -> APIError {
        APIError(status: 503, message: message, type: "unavailable_error", retryAfter: retryAfter)
    }

    /// HTTP 500: a fault in the endpoint or the model runner itself.
    public static func internalError(_ message: String) -> APIError {
        APIError(status: 500, message: message, type: "server_error")
    }

    /// The API error for a backend's error (any other error is a 503 naming it).
    /// `fields` renames the backend's parameter names to the request's (chat's `messages`
    /// for `prompt`, `max_completion_tokens` for `max_tokens`).
    public init(_ error: Error, fields: [String: String] = [:]) {
        switch error {
        case let e as APIError:
            self = e
        case let BackendError.invalidRequest(message, param):
            self = .invalidRequest(message, param: param.map { fields[$0] ?? $0 })
        case let BackendError.unavailable(message, retryAfter):
            self = .unavailable(message, retryAfter: retryAfter)
        case let BackendError.internalError(message):
            self = .internalError(message)
        default:
            self = .unavailable("generation failed: \(error)")
        }
    }

    /// The error object, as sent in a body or an SSE event.
    public var json: JSONValue {
        ["error": [
            "message": .string(message),
            "type": .string(type),
            "param": JSONValue(param),
            "code": .null,
        ]]
    }

    public var description: String {
        "HTTP \(status) \(type)\(param.map { " (\($0))" } ?? ""): \(message)"
    }
}
