import Foundation
import LlamaInference
import LlamaClient
import LlamaSampling
import LlamaServer
import Testing

/// The blocking functions (`streamCompletion(endpoint:...)`, `fetchStatus`, `request`) against
/// the real endpoint over a scripted backend. Each call runs on a thread of its own
/// (``onThread(_:)``); the expectations run in the test's task.
@Suite("LlamaClient against the live endpoint", .timeLimit(.minutes(1)))
struct LlamaClientTests {
    static let words = [" The", " cat", " sat", " on", " the", " mat", "."]

    @Test("streamCompletion delivers the text piece by piece, the finish reason and usage")
    func streamsCompletion() async throws {
        let backend = WordBackend(words: Self.words)
        try await withLiveServer(backend) { endpoint in
            let collector = TextCollector()
            let parameters = SamplingParameters(temperature: 0.5, topK: 10, topP: 0.9, minP: 0.02,
                                                repeatPenalty: 1.2, repeatLastN: 16, seed: 99)
            let result = try await onThread {
                try streamCompletion(endpoint: endpoint, prompt: "Once", parameters: parameters, maxTokens: 4) {
                    collector.append($0)
                }
            }
            #expect(collector.pieces == [" The", " cat", " sat", " on"])
            #expect(result.finishReason == "length")
            #expect(result.usage == TokenUsage(promptTokens: 5, completionTokens: 4, totalTokens: 9))

            let whole = try await onThread {
                try streamCompletion(endpoint: endpoint + "/", prompt: "Once", maxTokens: 100) { _ in }
            }
            #expect(whole.finishReason == "stop")
            #expect(whole.usage.completionTokens == 7)
        }
        #expect(backend.jobs.first?.parameters == SamplingParameters(
            temperature: 0.5, topK: 10, topP: 0.9, minP: 0.02, repeatPenalty: 1.2, repeatLastN: 16, seed: 99))
        #expect(backend.jobs.first?.promptTokens == [1] + "Once".utf8.map { Int32($0) + 3 })
        #expect(backend.jobs.count == 2)
    }

    @Test("stop strings end the stream early without the stop text")
    func stopStrings() async throws {
        let backend = WordBackend(words: Self.words)
        try await withLiveServer(backend) { endpoint in
            let collector = TextCollector()
            let result = try await onThread {
                try streamCompletion(endpoint: endpoint, prompt: "x", maxTokens: 50, stop: ["on the"]) {
                    collector.append($0)
                }
            }
            #expect(collector.pieces.joined() == " The cat sat ")
            #expect(result.finishReason == "stop")
        }
    }

    @Test("a refused request throws httpStatus with the server's message")
    func refusedRequest() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { endpoint in
            let error = await #expect(throws: LlamaClientError.self) {
                _ = try await onThread {
                    try streamCompletion(endpoint: endpoint, prompt: "x",
                                         parameters: SamplingParameters(temperature: -1)) { _ in }
                }
            }
            guard case let .httpStatus(status, message)? = error else {
                Issue.record("expected httpStatus, got \(String(describing: error))")
                return
            }
            #expect(status == 400)
            #expect(message.contains("temperature"))
            #expect(error?.description.hasPrefix("server error: HTTP 400: ") == true)
        }
    }

    @Test("a failure mid-stream throws streamError after the text before it")
    func failureMidStream() async throws {
        let backend = WordBackend(words: [" a", " b"], failureMessage: "worker w1 vanished")
        try await withLiveServer(backend) { endpoint in
            let collector = TextCollector()
            await #expect(throws: LlamaClientError.streamError("generation failed: worker w1 vanished")) {
                _ = try await onThread { try streamCompletion(endpoint: endpoint, prompt: "x") { collector.append($0) } }
            }
            #expect(collector.pieces == [" a", " b"])
        }
    }

    @Test("request() reads JSON, error and 404 responses")
    func plainRequests() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { endpoint in
            let models = try await onThread { try request(method: "GET", url: endpoint + "/v1/models") }
            #expect(models.status == 200)
            #expect(models.header("Content-Type")?.hasPrefix("application/json") == true)
            #expect(models.text.contains("\"word-llama\""))

            let body = Data(#"{"prompt": "Hi", "max_tokens": 3}"#.utf8)
            let completion = try await onThread { try request(method: "POST", url: endpoint + "/v1/completions", body: body) }
            #expect(completion.status == 200)
            let json = try JSONSerialization.jsonObject(with: Data(completion.body)) as? [String: Any]
            let choices = json?["choices"] as? [[String: Any]]
            #expect(choices?.first?["text"] as? String == " The cat sat")

            let missing = try await onThread { try request(method: "GET", url: endpoint + "/nowhere") }
            #expect(missing.status == 404)
            #expect(missing.text.contains("not_found_error"))

            let tokens = try await onThread {
                try request(method: "POST", url: endpoint + "/tokenize", body: Data(#"{"content": "A"}"#.utf8))
            }
            #expect(tokens.text == #"{"tokens":[68]}"#)
        }
    }

    @Test("fetchStatus decodes /status and formatStatusTable lays it out")
    func status() async throws {
        try await withLiveServer(WordBackend(words: Self.words)) { endpoint in
            let status = try await onThread { try fetchStatus(endpoint: endpoint) }
            #expect(status.model == "word-llama")
            #expect(status.contextLength == 512)
            #expect(status.ready)
            #expect(status.workers.map(\.name) == ["w1", "w2"])
            #expect(status.workers[0].layers == "0-11")
            #expect(status.workers[0].tokensPerSecond == 21.25)
            #expect(status.workers[1].threads == nil)
            #expect(status.metrics.requestsTotal == 9)
            #expect(status.metrics.tokensPerSecond == 15.5)
            #expect(!status.draining && !status.insecure)

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

    @Test("a standby, draining and insecure show in the status table")
    func statusFlags() async throws {
        let standby = WorkerStatus(name: "w3", state: "standby", threads: 2, standby: true)
        let backend = WordBackend(words: Self.words, standbys: [standby], draining: true, insecure: true)
        try await withLiveServer(backend) { endpoint in
            let status = try await onThread { try fetchStatus(endpoint: endpoint) }
            #expect(status.draining && status.insecure)
            #expect(status.workers.map(\.standby) == [false, false, true])
            let table = formatStatusTable(status)
            #expect(table.hasPrefix("model word-llama, context 512, ready, draining (new requests are refused)\n"))
            #expect(table.contains("\nw3 (standby)  standby  -"))
            #expect(table.hasSuffix("WARNING: the endpoint runs without API keys on a network address (insecure: true)\n"))
        }
    }

    @Test("closing a stream early cancels the job on the server")
    func disconnectCancelsStream() async throws {
        let backend = WordBackend(words: [" one", " two"], hangAfterWords: true)
        struct Enough: Error {}
        try await withLiveServer(backend) { endpoint in
            await #expect(throws: Enough.self) {
                _ = try await onThread {
                    try streamCompletion(endpoint: endpoint, prompt: "x", maxTokens: 100) { _ in throw Enough() }
                }
            }
            #expect(await backend.waitForTerminations(1) == ["cancelled"])
        }
    }

    @Test("a client that gives up on a whole completion cancels the job on the server")
    func disconnectCancelsWholeCompletion() async throws {
        let backend = WordBackend(words: [" one"], hangAfterWords: true)
        try await withLiveServer(backend) { endpoint in
            let body = Data(#"{"prompt": "x", "max_tokens": 100}"#.utf8)
            let error = await #expect(throws: LlamaClientError.self) {
                _ = try await onThread {
                    try request(method: "POST", url: endpoint + "/v1/completions", body: body,
                                timeouts: ClientTimeouts(connect: 5, read: 0.3))
                }
            }
            guard case let .timedOut(message)? = error else {
                Issue.record("expected timedOut, got \(String(describing: error))")
                return
            }
            #expect(message.contains("no data from 127.0.0.1:") && message.contains("for 0.3 s"))
            #expect(await backend.waitForTerminations(1) == ["cancelled"])
            // The server still answers.
            let health = try await onThread { try request(method: "GET", url: endpoint + "/health") }
            #expect(health.status == 200)
        }
    }

    @Test("an API key goes as Authorization: Bearer; without it the server's 401 message comes through")
    func apiKey() async throws {
        let options = LlamaHTTPServer.Options(streamKeepAliveInterval: 0.05, apiKeys: ["key-for-tests-1"])
        try await withLiveServer(WordBackend(words: Self.words), options: options) { endpoint in
            let refused = await #expect(throws: LlamaClientError.self) {
                _ = try await onThread { try fetchStatus(endpoint: endpoint) }
            }
            guard case let .httpStatus(401, message)? = refused else {
                Issue.record("expected HTTP 401, got \(String(describing: refused))")
                return
            }
            #expect(message.contains("API key"))
            await #expect(throws: LlamaClientError.self) {
                _ = try await onThread { try fetchStatus(endpoint: endpoint, apiKey: "wrong-key-000") }
            }

            let status = try await onThread { try fetchStatus(endpoint: endpoint, apiKey: "key-for-tests-1") }
            #expect(status.model == "word-llama")
            let result = try await onThread {
                try streamCompletion(endpoint: endpoint, prompt: "x", maxTokens: 2, apiKey: "key-for-tests-1") { _ in }
            }
            #expect(result.usage.completionTokens == 2)
            let models = try await onThread { try request(method: "GET", url: endpoint + "/v1/models", apiKey: "key-for-tests-1") }
            #expect(models.status == 200)
        }
    }

    @Test("bad URLs, bad arguments and unreachable hosts are clear errors")
    func connectionErrors() async throws {
        for url in ["ftp://host/x", "http://", "http://host:0", "http://host:70000", "http://[::1/x", "http://host:ab"] {
            let error = #expect(throws: LlamaClientError.self, "\(url)") { _ = try request(method: "GET", url: url) }
            if let error, case .invalidURL = error {} else { Issue.record("\(url): \(String(describing: error))") }
        }
        for timeouts in [ClientTimeouts(connect: 0), ClientTimeouts(read: -1), ClientTimeouts(total: .nan)] {
            #expect(throws: LlamaClientError.self, "\(timeouts)") {
                _ = try request(method: "GET", url: "http://127.0.0.1:1/", timeouts: timeouts)
            }
        }
        #expect(throws: LlamaClientError.self) {
            _ = try request(method: "GET", url: "http://127.0.0.1:1/", headers: ["X-Bad": "a\r\nb"])
        }
        #expect(throws: LlamaClientError.self) {
            _ = try fetchStatus(endpoint: "http://127.0.0.1:1/", apiKey: "line\nbreak")
        }

        // Port 1 on loopback has no listener: the connection is refused at once.
        let refused = await #expect(throws: LlamaClientError.self) {
            _ = try await onThread { try request(method: "GET", url: "http://127.0.0.1:1/health") }
        }
        #expect(refused == .connectionFailed("connection refused by 127.0.0.1:1 (is the endpoint running?)"))
        #expect(refused?.description == "connection failed: connection refused by 127.0.0.1:1 (is the endpoint running?)")

        let unresolved = await #expect(throws: LlamaClientError.self) {
            _ = try await onThread { try fetchStatus(endpoint: "http://no-such-host.invalid") }
        }
        guard case let .connectionFailed(message)? = unresolved else {
            Issue.record("expected connectionFailed, got \(String(describing: unresolved))")
            return
        }
        #expect(message.hasPrefix("cannot resolve the host of no-such-host.invalid:80"))
    }
}
