/// An error the endpoint answers with an OpenAI-style body:
/// `{"error": {"message": ..., "type": ..., "param": ..., "code": null}}`.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// HTTP status code.
    public var status: Int
    /// What went wrong, fit to show a user.
    public var message: String
    /// OpenAI error type: `invalid_request_error`, `not_found_error`, `unavailable_error`, `server_error`.
    public var type: String
    /// The request field at fault, if one is.
    public var param: String?

    public init(status: Int, message: String, type: String, param: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
    }

    /// HTTP 400: the request is malformed or a value is out of range.
    public static func invalidRequest(_ message: String, param: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param)
    }

    /// HTTP 404: no such route.
    public static func notFound(_ message: String) -> APIError {
        APIError(status: 404, message: message, type: "not_found_error")
    }

    /// HTTP 503: the model runner cannot serve the request (a worker is gone, the cluster is not ready).
    public static func unavailable(_ message: String) -> APIError {
        APIError(status: 503, message: message, type: "unavailable_error")
    }

    /// HTTP 500: a fault in the endpoint or the model runner itself.
    public static func internalError(_ message: String) -> APIError {
        APIError(status: 500, message: message, type: "server_error")
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
