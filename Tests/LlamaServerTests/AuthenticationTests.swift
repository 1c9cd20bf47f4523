import TestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LlamaServer
import Testing

/// API keys as llama-server takes them: `Authorization: Bearer KEY` or `X-Api-Key: KEY`, 401
/// with an OpenAI `authentication_error` otherwise, `/health` open to all.
@Suite("API keys")
struct AuthenticationTests {
    static let keys = ["first-key-0123", "second-key-4567"]
    static let completion = #"{"prompt": "Hi", "max_tokens": 2}"#

    func send(_ client: some TestClientProtocol, _ path: String, method: HTTPRequest.Method = .get,
              body: String? = nil, headers: HTTPFields = [:]) async throws -> Reply
    {
        var headers = headers
        if body != nil { headers[.contentType] = "application/json" }
        let response = try await client.executeRequest(uri: path, method: method, headers: headers,
                                                       body: body.map { ByteBuffer(string: $0) })
        return Reply(status: Int(response.status.code), contentType: response.headers[.contentType],
                     text: String(decoding: response.body.readableBytesView, as: UTF8.self))
    }

    func header(_ name: String, _ value: String) -> HTTPFields {
        var fields = HTTPFields()
        fields[HTTPField.Name(name)!] = value
        return fields
    }

    @Test("no key, a wrong key, a key of another scheme or a prefix of a key: 401 authentication_error")
    func refused() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend, options: .init(apiKeys: Self.keys)) { client in
            let offers: [HTTPFields] = [
                [:],
                header("Authorization", "Bearer wrong-key-0000"),
                header("Authorization", "Basic first-key-0123"),
                header("Authorization", "Bearer first-key-012"),       // a prefix
                header("Authorization", "Bearer first-key-01234"),     // one byte more
                header("Authorization", "Bearer "),
                header("X-Api-Key", "second-key-456"),
                header("X-Api-Key", ""),
            ]
            for offer in offers {
                for (path, method, body) in [("/v1/completions", HTTPRequest.Method.post, Self.completion as String?),
                                             ("/v1/models", .get, nil), ("/metrics", .get, nil), ("/props", .get, nil),
                                             ("/slots", .get, nil), ("/status", .get, nil)]
                {
                    let r = try await send(client, path, method: method, body: body, headers: offer)
                    #expect(r.status == 401, "\(path) with \(offer): \(r.status) \(r.text)")
                    #expect(r.json["error"]?["type"]?.stringValue == "authentication_error", "\(path): \(r.text)")
                }
            }
            // Nothing refused reached the model.
            #expect(backend.jobs.isEmpty)
        }
    }

    @Test("either header with any listed key is let in; /health needs no key")
    func admitted() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend, options: .init(apiKeys: Self.keys)) { client in
            for offer in [header("Authorization", "Bearer first-key-0123"), header("authorization", "bearer second-key-4567"),
                          header("X-Api-Key", "first-key-0123"), header("x-api-key", "second-key-4567")]
            {
                let r = try await send(client, "/v1/completions", method: .post, body: Self.completion, headers: offer)
                #expect(r.status == 200, "\(offer): \(r.status) \(r.text)")
                #expect(r.json["choices"]?[0]?["text"]?.stringValue?.isEmpty == false)
                let models = try await send(client, "/v1/models", headers: offer)
                #expect(models.status == 200)
            }
            let health = try await send(client, "/health")
            #expect(health.status == 200)
            #expect(health.json["status"] == "ok")
            #expect(backend.jobs.count == 4)
        }
    }

    @Test("without keys every route is open")
    func noKeys() async throws {
        try await withServer(ScriptedBackend()) { client in
            let r = try await send(client, "/v1/completions", method: .post, body: Self.completion)
            #expect(r.status == 200)
        }
    }
}
