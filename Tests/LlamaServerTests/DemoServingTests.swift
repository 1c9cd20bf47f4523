import Foundation
import GGUF
import LlamaModel
import LlamaInference
import LlamaServer
import Prometheus
import TestSupport
import Testing

/// The prompt cache, `n` choices by seed, `/props` and `/slots` through the HTTP endpoint
/// over the demo model, in one process and through an in-memory cluster.
@Suite("Prompt cache, choices, props and slots on the demo model", .serialized, .timeLimit(.minutes(6)))
struct DemoServingTests {
    /// A prompt of about 150 tokens from the held-out text, as token ids (BOS first).
    static func longPrompt(_ backend: any CompletionBackend) throws -> [Int32] {
        let text = try String(contentsOfFile: Repo.heldout, encoding: .utf8)
        return Array(backend.tokenize(String(text.prefix(2000)), addBOS: true).prefix(150))
    }

    static func ids(_ tokens: [Int32]) -> String { "[" + tokens.map(String.init).joined(separator: ",") + "]" }

    /// Polls `condition` (the status snapshot is published after each scheduler turn).
    static func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<200 {
            if try await condition() { return }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        Issue.record("\(what) did not happen within 2 s")
    }

    static func cachedCounter(_ client: LiveClient) async throws -> Int {
        let status = try await client.get("/status")
        return Int(status.json["metrics"]?["prompt_tokens_cached"]?.integerValue ?? -1)
    }

    /// The same requests with `cache_prompt` true and false give the same text; the cached
    /// counter moves only for the first, by at least the shared prefix.
    static func checkPromptCache(_ backend: any CompletionBackend, _ client: LiveClient) async throws {
        let prompt = try longPrompt(backend)
        let suffixes: [[Int32]] = [[], [450, 11203], [322, 278, 6635]]
        let priming = try await client.post("/v1/completions", #"{"prompt": \#(ids(prompt)), "max_tokens": 2}"#)
        #expect(priming.status == 200)
        for (i, suffix) in suffixes.enumerated() {
            for sampling in [#""temperature": 0"#, #""temperature": 0.8, "seed": \#(40 + i)"#] {
                let body = #"{"prompt": \#(ids(prompt + suffix)), "max_tokens": 12, \#(sampling)"#
                let before = try await cachedCounter(client)
                let cached = try await client.post("/v1/completions", body + #", "cache_prompt": true}"#)
                let afterCached = try await cachedCounter(client)
                let cold = try await client.post("/v1/completions", body + #", "cache_prompt": false}"#)
                let afterCold = try await cachedCounter(client)
                #expect(cached.status == 200 && cold.status == 200)
                let text = cached.json["choices"]?[0]?["text"]?.stringValue
                #expect(text != nil && text == cold.json["choices"]?[0]?["text"]?.stringValue,
                        "suffix \(suffix), \(sampling): same text with and without the cache")
                // An earlier request left the prompt (all but the suffix) in a slot.
                #expect(afterCached - before >= prompt.count - 1, "tokens from the cache: \(afterCached - before)")
                #expect(afterCold == afterCached, "cache_prompt false reuses nothing")
            }
        }
    }

    @Test("prompt cache: the same text with cache_prompt true and false; cached-token counters and /slots move")
    func promptCache() async throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = ServingMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let backend = try LocalBackend(modelPath: Repo.demoModel,
                                       options: .init(threads: 1, slots: 2, contextLength: Demo.context, kvCache: Demo.kvCache),
                                       metrics: metrics)
        backend.start()
        defer { backend.shutdown() }
        try await withLiveServer(backend, metrics: registry) { client in
            let idle = try await client.get("/slots")
            #expect((0..<2).map { idle.json[$0]?["n_cached_tokens"] } == [0, 0] && idle.json[2] == nil)
            let prompt = try Self.longPrompt(backend)
            let first = try await client.post("/v1/completions", #"{"prompt": \#(Self.ids(prompt)), "max_tokens": 5, "temperature": 0}"#)
            #expect(first.json["usage"]?["completion_tokens"] == 5)
            // The slot keeps the prompt and the generated tokens but the last (never computed).
            let expected = Int64(prompt.count + 4)
            try await Self.eventually("the slot's cache shows") {
                let slots = try await client.get("/slots").json
                let counts: [Int64] = (0..<2).compactMap { slots[$0]?["n_cached_tokens"]?.integerValue }
                return counts.contains(expected)
            }
            try await Self.checkPromptCache(backend, client)
            let samples = try PrometheusTextParser.parse(try await client.get("/metrics").text)
            let counted = try await Self.cachedCounter(client)
            #expect(samples["llamacluster_prompt_tokens_cached_total"] == Double(counted))
            #expect(counted >= 5 * (prompt.count - 1))
        }
    }

    @Test("prompt cache through an in-memory cluster: the same text with and without it")
    func promptCacheCluster() async throws {
        try await withDemoCluster(slots: 2) { backend, client in
            try await Self.checkPromptCache(backend, client)
        }
    }

    /// `n: 3` with seed S: choice i equals a request of its own with seed S + i, whole and streamed.
    static func checkChoices(_ client: LiveClient, route: String, body: String, seed: Int) async throws {
        func texts(_ reply: Reply) -> [String] {
            guard case let .array(choices)? = reply.json["choices"] else { return [] }
            return choices.map { $0["text"]?.stringValue ?? $0["message"]?["content"]?.stringValue ?? "?" }
        }
        let together = try await client.post(route, "{\(body), \"n\": 3, \"seed\": \(seed)}")
        #expect(together.status == 200)
        let choices = texts(together)
        #expect(choices.count == 3)
        #expect((0..<3).map { together.json["choices"]?[$0]?["index"]?.integerValue } == [0, 1, 2])
        var alone: [String] = []
        for i in 0..<3 {
            alone += texts(try await client.post(route, "{\(body), \"seed\": \(seed + i)}"))
        }
        #expect(choices == alone, "choice i is the request with seed \(seed) + i")
        #expect(Set(choices).count > 1, "three seeds, not one text: \(choices)")
        let streamed = try await client.post(route, "{\(body), \"n\": 3, \"seed\": \(seed), \"stream\": true}")
        var pieces = ["", "", ""]
        for chunk in streamed.streamedChunks {
            guard let c = chunk["choices"]?[0], let i = c["index"]?.integerValue.map(Int.init), (0..<3).contains(i) else { continue }
            pieces[i] += c["text"]?.stringValue ?? c["delta"]?["content"]?.stringValue ?? ""
        }
        #expect(pieces == choices, "streamed choices")
    }

    @Test("n: 3 with seed S gives the choices of seeds S, S+1, S+2, completions and chat")
    func choices() async throws {
        try await withDemoServer { _, client in
            try await Self.checkChoices(client, route: "/v1/completions",
                                        body: #""prompt": "The little bird", "max_tokens": 16, "temperature": 1.0"#, seed: 7)
            try await Self.checkChoices(client, route: "/v1/chat/completions",
                                        body: #""messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 12, "temperature": 0.9, "top_k": 0"#,
                                        seed: 1234)
        }
    }

    @Test("n: 3 through an in-memory cluster; its /slots name the layers each worker runs")
    func choicesCluster() async throws {
        try await withDemoCluster { _, client in
            try await Self.checkChoices(client, route: "/v1/completions",
                                        body: #""prompt": "The little bird", "max_tokens": 16, "temperature": 1.0"#, seed: 7)
            guard case let .array(workers)? = try await client.get("/health").json["workers"] else {
                Issue.record("no workers in /health")
                return
            }
            let stages = workers.map { "\($0["name"]?.stringValue ?? "?") \($0["layers"]?.stringValue ?? "?")" }.joined(separator: ", ")
            #expect(stages.hasPrefix("w1 0-") && stages.contains(", w2 "), "\(stages)")
            let slots = try await client.get("/slots").json
            for i in 0..<3 {
                #expect(slots[i]?["id"] == JSONValue(i))
                #expect(slots[i]?["stages"]?.stringValue == stages)
                #expect(slots[i]?["n_ctx"] == 512)
            }
        }
    }

    @Test("/props and /slots as llama-server names them; /slots shows a running request")
    func propsAndSlots() async throws {
        try await withDemoServer(slots: 2) { backend, client in
            let props = try await client.get("/props").json
            let settings = props["default_generation_settings"]
            #expect(settings?["n_ctx"] == JSONValue(Demo.context))
            #expect(settings?["params"]?["temperature"]?.doubleValue == 0.8)
            #expect(settings?["params"]?["top_k"] == 40)
            #expect(props["total_slots"] == 2)
            #expect(props["model_path"]?.stringValue == Repo.demoModel)
            #expect(props["chat_template"]?.stringValue?.isEmpty == false)
            #expect(props["build_info"]?.stringValue?.isEmpty == false)
            let models = try await client.get("/v1/models").json
            #expect(models["data"]?[0]?["meta"]?["n_ctx"] == JSONValue(Demo.context))

            let layers = "local 0-\(try LlamaConfig(gguf: GGUFFile(path: Repo.demoModel)).layerCount - 1)"
            let stream = Task {
                try await client.post("/v1/completions",
                    #"{"prompt": "Once", "max_tokens": 400, "temperature": 0, "stream": true, "logit_bias": {"2": -100}}"#)
            }
            try await Self.eventually("a slot processing") {
                let slots = try await client.get("/slots").json
                return slots[0]?["is_processing"] == true || slots[1]?["is_processing"] == true
            }
            let slots = try await client.get("/slots").json
            for i in 0..<2 {
                let s = slots[i]
                #expect(s?["id"] == JSONValue(i))
                #expect(s?["n_ctx"] == JSONValue(Demo.context))
                #expect(s?["stages"]?.stringValue == layers)
                let busy = s?["is_processing"] == true
                #expect((s?["id_task"] != .null) == busy)
                if busy { #expect((s?["n_cached_tokens"]?.integerValue ?? 0) >= 2) }
            }
            stream.cancel()
            _ = try? await stream.value
        }
    }
}
