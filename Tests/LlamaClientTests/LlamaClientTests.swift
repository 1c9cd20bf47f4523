import TestSupport
import Foundation
import HummingbirdTesting
import LlamaClient
import LlamaSampling
import LlamaServer
import Testing

/// Runs blocking client code on its own thread, so the server's tasks keep their threads.
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// Starts the endpoint over `backend` on a free loopback port and runs `body` with its base URL.
func withLiveServer(_ backend: WordBackend, _ body: @escaping @Sendable (String) throws -> Void) async throws {
    let options = LlamaHTTPServer.Options(streamKeepAliveInterval: 0.05)
    let app = try LlamaHTTPServer(backend: backend, host: "127.0.0.1", port: 0, options: options).makeApplication()
    try await app.test(.live) { client in
        let port = try #require(client.port)
        try await onThread { try body("http://127.0.0.1:\(port)") }
    }
}

/// Collects streamed text from a non-Sendable callback.
final class TextCollector: @unchecked Sendable {
    var pieces: [String] = []
}

@Suite("LlamaClient against the live endpoint")
struct LlamaClientTests {
    static let words = [" The", " cat", " sat", " on", " the", " mat", "."]

    @Test("streamCompletion delivers the text piece by piece, the finish reason and usage")
    func streamsCompletion() async throws {
        let backend = WordBackend(words: Self.words)
        try await withLiveServer(backend) { endpoint in
            let collector = TextCollector()
            let parameters = SamplingParameters(temperature: 0.5, topK: 10, topP: 0.9, minP: 0.02,
                                                repeatPenalty: 1.2, repeatLastN: 16, seed: 99)
            let result = try streamCompletion(endpoint: endpoint, prompt: "Once", parameters: parameters,
                                              maxTokens: 4) { collector.pieces.append($0) }
            #expect(collector.pieces == [" The", " cat", " sat", " on"])
            #expect(result.finishReason == "length")
            #expect(result.usage == TokenUsage(promptTokens: 5, completionTokens: 4, totalTokens: 9))

            let whole = try streamCompletion(endpoint: endpoint + "/", prompt: "Once", maxTokens: 100) { _ in }
            #expect(whole.finishReason == "stop")
            #expect(whole.usage.completionTokens == 7)
        }
        #expect(backend.jobs.first?.parameters == SamplingParameters(
            temperature: 0.5, topK: 10, topP: 0.9, minP: 0.02, repeatPenalty: 1.2, repeatLastN: 16, seed: 99))
        #expect(backend.jobs.first?.promptTokens == [1] + "Once".utf8.map { Int32($0) + 3 })
    }

    @Test("stop strings end the stream early without the stop text")
    func stopStrings() async throws {
        let backend = WordBackend(words: Self.words)
        try await withLiveServer(backend) { endpoint in
            let collector = TextCollector()
            let result = try streamCompletion(endpoint: endpoint, prompt: "x", maxTokens: 50, stop: ["on the"]) {
                collector.pieces.append($0)
            }
            #expect(collector.pieces.joined() == " The cat sat ")
            #expect(result.finishReason == "stop")
        }
    }

    @Test("a refused request throws httpStatus with the server's message")
    func refusedRequest() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { endpoint in
            #expect {
                _ = try streamCompletion(endpoint: endpoint, prompt: "x",
                                         parameters: SamplingParameters(temperature: -1)) { _ in }
            } throws: { error in
                guard case let LlamaClientError.httpStatus(status, message) = error else { return false }
                return status == 400 && message.contains("temperature")
            }
        }
    }

    @Test("a failure mid-stream throws streamError after the text before it")
    func failureMidStream() async throws {
        let backend = WordBackend(words: [" a", " b"], failureMessage: "worker w1 vanished")
        try await withLiveServer(backend) { endpoint in
            let collector = TextCollector()
            #expect(throws: LlamaClientError.streamError("generation failed: worker w1 vanished")) {
                _ = try streamCompletion(endpoint: endpoint, prompt: "x") { collector.pieces.append($0) }
            }
            #expect(collector.pieces == [" a", " b"])
        }
    }

    @Test("request() reads JSON, error and 404 responses")
    func plainRequests() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { endpoint in
            let models = try request(method: "GET", url: endpoint + "/v1/models")
            #expect(models.status == 200)
            #expect(models.header("Content-Type")?.hasPrefix("application/json") == true)
            #expect(models.text.contains("\"word-llama\""))

            let body = Data(#"{"prompt": "Hi", "max_tokens": 3}"#.utf8)
            let completion = try request(method: "POST", url: endpoint + "/v1/completions", body: body)
            #expect(completion.status == 200)
            let json = try JSONSerialization.jsonObject(with: Data(completion.body)) as? [String: Any]
            let choices = json?["choices"] as? [[String: Any]]
            #expect(choices?.first?["text"] as? String == " The cat sat")

            let missing = try request(method: "GET", url: endpoint + "/nowhere")
            #expect(missing.status == 404)
            #expect(missing.text.contains("not_found_error"))

            let tokens = try request(method: "POST", url: endpoint + "/tokenize", body: Data(#"{"content": "A"}"#.utf8))
            #expect(tokens.text == #"{"tokens":[68]}"#)
        }
    }

    @Test("fetchStatus decodes /status and formatStatusTable lays it out")
    func status() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { endpoint in
            let status = try fetchStatus(endpoint: endpoint)
            #expect(status.model == "word-llama")
            #expect(status.contextLength == 512)
            #expect(status.ready)
            #expect(status.workers.map(\.name) == ["w1", "w2"])
            #expect(status.workers[0].layers == "0-11")
            #expect(status.workers[0].tokensPerSecond == 21.25)
            #expect(status.workers[1].threads == nil)
            #expect(status.metrics.requestsTotal == 9)
            #expect(status.metrics.tokensPerSecond == 15.5)

            let table = formatStatusTable(status)
            let lines = table.split(separator: "\n").map(String.init)
            #expect(lines[0] == "model word-llama, context 512, ready")
            #expect(lines[1].contains("requests 9 (1 failed"))
            #expect(lines[2].hasPrefix("WORKER  STATE    LAYERS"))
            #expect(lines[3].hasPrefix("w1      ready    0-11    4        640     21.2"))
            #expect(lines[3].hasSuffix("tcp://127.0.0.1:7001"))
            #expect(lines[4].hasPrefix("w2      loading  12-21   -        0       0.0"))
        }
    }

    @Test("closing a stream early cancels the job on the server")
    func disconnectCancelsStream() async throws {
        let backend = WordBackend(words: [" one", " two"], hangAfterWords: true)
        struct Enough: Error {}
        try await withLiveServer(backend) { endpoint in
            #expect(throws: Enough.self) {
                _ = try streamCompletion(endpoint: endpoint, prompt: "x", maxTokens: 100) { _ in throw Enough() }
            }
            #expect(backend.waitForTerminations(1) == ["cancelled"])
        }
    }

    @Test("a client that gives up on a whole completion cancels the job on the server")
    func disconnectCancelsWholeCompletion() async throws {
        let backend = WordBackend(words: [" one"], hangAfterWords: true)
        try await withLiveServer(backend) { endpoint in
            let body = Data(#"{"prompt": "x", "max_tokens": 100}"#.utf8)
            #expect {
                _ = try request(method: "POST", url: endpoint + "/v1/completions", body: body,
                                timeouts: ClientTimeouts(connect: 5, read: 0.3))
            } throws: { error in
                if case LlamaClientError.timedOut = error { return true }
                return false
            }
            #expect(backend.waitForTerminations(1) == ["cancelled"])
            // The server still answers.
            let health = try request(method: "GET", url: endpoint + "/health")
            #expect(health.status == 200)
        }
    }

    @Test("bad URLs and unreachable hosts are clear errors")
    func connectionErrors() throws {
        for url in ["ftp://host/x", "http://", "http://host:0", "http://host:70000", "http://[::1/x", "http://host:ab"] {
            #expect(throws: LlamaClientError.self, "\(url)") { _ = try request(method: "GET", url: url) }
            do {
                _ = try request(method: "GET", url: url)
            } catch let error as LlamaClientError {
                guard case .invalidURL = error else {
                    Issue.record("\(url): \(error)")
                    continue
                }
            }
        }
        // Port 1 on loopback has no listener: the connection is refused at once.
        #expect {
            _ = try request(method: "GET", url: "http://127.0.0.1:1/health")
        } throws: { error in
            if case LlamaClientError.connectionFailed = error { return true }
            return false
        }
        #expect {
            _ = try request(method: "GET", url: "http://no-such-host.invalid/health")
        } throws: { error in
            if case LlamaClientError.connectionFailed = error { return true }
            return false
        }
    }
}
