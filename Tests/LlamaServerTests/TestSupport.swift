import TestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import LlamaServer
import LlamaInference
import Prometheus
import Testing

/// A response as the tests look at it.
struct Reply {
    var status: Int
    var contentType: String?
    var text: String

    /// The body parsed as JSON (fails the test if it is not JSON).
    var json: JSONValue {
        do {
            return try JSONValue.parse(text)
        } catch {
            Issue.record("body is not JSON: \(error): \(text)")
            return .null
        }
    }

    /// The `error.param` of an OpenAI error body.
    var errorParam: String? { json["error"]?["param"]?.stringValue }
    var errorMessage: String? { json["error"]?["message"]?.stringValue }

    /// The payloads of the server-sent events (`data: ...`), in order.
    var events: [String] {
        var payloads: [String] = []
        for block in text.components(separatedBy: "\n\n") where !block.isEmpty {
            guard block.hasPrefix("data: ") else {
                Issue.record("SSE event does not start with 'data: ': \(block)")
                continue
            }
            payloads.append(String(block.dropFirst("data: ".count)))
        }
        if !text.isEmpty, !text.hasSuffix("\n\n") {
            Issue.record("SSE body does not end with a blank line")
        }
        return payloads
    }
}

extension TestClientProtocol {
    func post(_ path: String, _ body: String) async throws -> Reply {
        try await send(path, method: .post, body: body)
    }

    func get(_ path: String) async throws -> Reply {
        try await send(path, method: .get, body: nil)
    }

    func send(_ path: String, method: HTTPRequest.Method, body: String?) async throws -> Reply {
        let response = try await executeRequest(
            uri: path, method: method, headers: body == nil ? [:] : [.contentType: "application/json"],
            body: body.map { ByteBuffer(string: $0) })
        return Reply(
            status: Int(response.status.code),
            contentType: response.headers[.contentType],
            text: String(decoding: response.body.readableBytesView, as: UTF8.self))
    }
}

/// Runs `test` against the endpoint over `backend`, requests going straight to the router.
func withServer(_ backend: any CompletionBackend, options: LlamaHTTPServer.Options = .init(),
                metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws
{
    let app = try LlamaHTTPServer(backend: backend, options: options, metrics: metrics).makeApplication()
    try await app.test(.router, test)
}

/// Token ids the scripted backend's byte tokenizer gives `text` (no BOS).
func byteTokens(_ text: String) -> [Int32] {
    text.utf8.map { Int32($0) + 3 }
}
