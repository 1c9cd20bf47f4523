import Foundation
import LlamaClient
import LlamaSampling
import LlamaServer
import Testing

/// The async client (``LlamaEndpoint``): streaming, status, API keys, cancellation, HTTPS with a
/// CA certificate of its own, and that calls leave no threads or connections behind.
@Suite("LlamaEndpoint (async) against the live endpoint", .timeLimit(.minutes(1)))
struct LlamaEndpointTests {
    static let words = [" The", " cat", " sat", " on", " the", " mat", "."]

    @Test("streamCompletion and status over the async API")
    func streamsAndStatus() async throws {
        let backend = WordBackend(words: Self.words)
        try await withLiveServer(backend) { url in
            let endpoint = LlamaEndpoint(url)
            var pieces: [String] = []
            let result = try await endpoint.streamCompletion(prompt: "Once", maxTokens: 3, stop: []) { pieces.append($0) }
            #expect(pieces == [" The", " cat", " sat"])
            #expect(result.finishReason == "length")
            #expect(result.usage == TokenUsage(promptTokens: 5, completionTokens: 3, totalTokens: 8))

            let status = try await endpoint.status()
            #expect(status.model == "word-llama")
            #expect(status.workers.count == 2)

            let models = try await endpoint.request(method: "GET", path: "/v1/models")
            #expect(models.status == 200 && models.text.contains("word-llama"))
        }
    }

    @Test("the API key of the endpoint is sent with every call")
    func apiKey() async throws {
        let options = LlamaHTTPServer.Options(streamKeepAliveInterval: 0.05, apiKeys: ["key-for-tests-2"])
        try await withLiveServer(WordBackend(words: Self.words), options: options) { url in
            let error = await #expect(throws: LlamaClientError.self) {
                _ = try await LlamaEndpoint(url).streamCompletion(prompt: "x") { _ in }
            }
            if case .httpStatus(401, _)? = error {} else { Issue.record("expected HTTP 401, got \(String(describing: error))") }

            let endpoint = LlamaEndpoint(url, apiKey: "key-for-tests-2")
            let result = try await endpoint.streamCompletion(prompt: "x", maxTokens: 2) { _ in }
            #expect(result.usage.completionTokens == 2)
            #expect(try await endpoint.status().ready)
        }
    }

    @Test("cancelling the task closes the connection, which cancels the job on the server")
    func cancellation() async throws {
        let backend = WordBackend(words: [" one", " two"], hangAfterWords: true)
        try await withLiveServer(backend) { url in
            let firstText = AsyncStream<Void>.makeStream()
            let stream = Task {
                try await LlamaEndpoint(url).streamCompletion(prompt: "x", maxTokens: 100) { _ in
                    firstText.continuation.yield()
                }
            }
            for await _ in firstText.stream { break }
            stream.cancel()
            await #expect(throws: CancellationError.self) { _ = try await stream.value }
            #expect(await backend.waitForTerminations(1) == ["cancelled"])
        }
    }

    @Test("throwing from onText ends the stream with that error and cancels the job")
    func throwingCallback() async throws {
        let backend = WordBackend(words: [" one", " two"], hangAfterWords: true)
        struct Enough: Error {}
        try await withLiveServer(backend) { url in
            await #expect(throws: Enough.self) {
                _ = try await LlamaEndpoint(url).streamCompletion(prompt: "x", maxTokens: 100) { _ in throw Enough() }
            }
            #expect(await backend.waitForTerminations(1) == ["cancelled"])
        }
    }

    @Test("https:// with the CA certificate to trust; without it, or with a bad file, a clear error")
    func https() async throws {
        var options = LlamaHTTPServer.Options(streamKeepAliveInterval: 0.05)
        options.tls = try TLSFixture.serverConfiguration()
        let authority = try TLSFixture.temporaryFile(TLSFixture.authorityPEM, name: "ca.pem")
        let notPEM = try TLSFixture.temporaryFile("not a certificate\n", name: "not.pem")
        defer {
            try? FileManager.default.removeItem(atPath: authority)
            try? FileManager.default.removeItem(atPath: notPEM)
        }
        try await withLiveServer(WordBackend(words: Self.words), options: options) { url in
            #expect(url.hasPrefix("https://127.0.0.1:"))
            let endpoint = LlamaEndpoint(url, caCertificateFile: authority)
            var text = ""
            let result = try await endpoint.streamCompletion(prompt: "x", maxTokens: 2) { text += $0 }
            #expect(text == " The cat" && result.finishReason == "length")
            #expect(try await endpoint.status().model == "word-llama")
            let blocking = try await onThread { try fetchStatus(endpoint: url, caCertificateFile: authority) }
            #expect(blocking.model == "word-llama")

            // The system's roots do not include the test authority.
            let untrusted = await #expect(throws: LlamaClientError.self) { _ = try await LlamaEndpoint(url).status() }
            guard case let .connectionFailed(message)? = untrusted else {
                Issue.record("expected connectionFailed, got \(String(describing: untrusted))")
                return
            }
            #expect(message.hasPrefix("TLS with 127.0.0.1:"))
            #expect(message.contains("not signed by a trusted CA"))

            let missing = await #expect(throws: LlamaClientError.self) {
                _ = try await LlamaEndpoint(url, caCertificateFile: "/no/such/ca.pem").status()
            }
            #expect(missing == .invalidArgument("the CA certificate file '/no/such/ca.pem' does not exist or cannot be read"))
            let garbage = await #expect(throws: LlamaClientError.self) {
                _ = try await LlamaEndpoint(url, caCertificateFile: notPEM).status()
            }
            if case let .invalidArgument(message)? = garbage {
                #expect(message.contains(notPEM))
            } else {
                Issue.record("expected invalidArgument, got \(String(describing: garbage))")
            }
        }
    }

    @Test("many calls leave no threads and no open connections behind",
          .enabled(if: threadCount() != nil && openConnections(port: 1) != nil, "needs /proc"))
    func noLeaks() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { url in
            let endpoint = LlamaEndpoint(url)
            let port = try #require(Int(url.split(separator: ":").last ?? ""))
            // One call of each kind first, so that the event loop threads exist.
            _ = try await endpoint.status()
            _ = try await onThread { try fetchStatus(endpoint: url) }
            let threads = try #require(threadCount())
            for _ in 0 ..< 20 {
                _ = try await endpoint.status()
                _ = try await endpoint.streamCompletion(prompt: "x", maxTokens: 2) { _ in }
                _ = try await onThread { try request(method: "GET", url: url + "/health") }
                _ = try await onThread { try streamCompletion(endpoint: url, prompt: "x", maxTokens: 2) { _ in } }
            }
            // Each call has closed its connection before returning; the server closes its side
            // once it sees that, so give it a moment.
            var open = openConnections(port: port) ?? -1
            for _ in 0 ..< 300 where open != 0 {
                try await Task.sleep(nanoseconds: 10_000_000)
                open = openConnections(port: port) ?? -1
            }
            #expect(open == 0, "80 calls left \(open) connections to port \(port) open")
            // A client with an event loop group of its own per call would add threads by the
            // dozen; allow for `onThread` threads of tests running at the same time.
            #expect((threadCount() ?? 0) <= threads + 40)
        }
    }
}
