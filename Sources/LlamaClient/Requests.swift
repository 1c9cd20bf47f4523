import AsyncHTTPClient
import Foundation

// MARK: - Plain requests

/// A complete HTTP response.
public struct HTTPClientResponse: Sendable {
    public var status: Int
    /// Header fields as received (names in lower case).
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first(where: { $0.name == lowered })?.value
    }
}

/// Sends an HTTP/1.1 request and reads the whole response (at most 64 MiB), blocking the
/// calling thread (see ``LlamaEndpoint`` for the async form; must not run on a NIO event loop).
/// - Parameters:
///   - method: "GET", "POST", ...
///   - url: `http://host[:port]/path` or `https://...`.
///   - body: request body (sent as `application/json` unless `headers` set a Content-Type).
///   - apiKey: sent as `Authorization: Bearer KEY` (unless `headers` set Authorization).
///   - caCertificateFile: a PEM file of CA certificates to trust for `https://` besides the
///     system's (for a server with a self-signed certificate).
/// - Throws: ``LlamaClientError`` for connection, timeout and protocol problems. A non-2xx status
///   is not an error here: look at ``HTTPClientResponse/status``.
public func request(method: String, url: String, body: Data? = nil, headers: [String: String] = [:],
                    timeouts: ClientTimeouts = ClientTimeouts(), apiKey: String? = nil,
                    caCertificateFile: String? = nil) throws -> HTTPClientResponse
{
    let outgoing = try OutgoingRequest(
        method: method, url: try EndpointURL(url), body: body.map { [UInt8]($0) }, headers: headers,
        settings: CallSettings(timeouts: timeouts, apiKey: apiKey, caCertificateFile: caCertificateFile))
    let response = try BlockingResponse(outgoing)
    defer { response.close() }
    let bytes = try response.readAll()
    return HTTPClientResponse(status: response.status, headers: response.headers, body: bytes)
}

/// Sends `outgoing` and reads the whole response, asynchronously.
func asyncRequest(_ outgoing: OutgoingRequest) async throws -> HTTPClientResponse {
    try await withResponse(outgoing) { response in
        var pieces = BodyPieces(response, of: outgoing)
        let bytes = try await pieces.readAll()
        return HTTPClientResponse(status: Int(response.status.code), headers: response.headers.lowercasedFields,
                                  body: bytes)
    }
}
