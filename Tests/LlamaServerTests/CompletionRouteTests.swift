import TestSupport
import LlamaSampling
import LlamaServer
import Testing

@Suite("POST /v1/completions")
struct CompletionRouteTests {
    @Test("a whole completion: text, finish reason, usage, OpenAI fields")
    func wholeCompletion() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "Count:", "max_tokens": 3}"#)
            #expect(reply.status == 200)
            #expect(reply.contentType?.hasPrefix("application/json") == true)
            let json = reply.json
            #expect(json["object"] == "text_completion")
            #expect(json["id"]?.stringValue?.hasPrefix("cmpl-") == true)
            #expect(json["model"] == "scripted-llama")
            #expect(json["created"]?.integerValue.map { $0 > 1_700_000_000 } == true)
            let choice = json["choices"]?[0]
            #expect(choice?["index"] == 0)
            #expect(choice?["text"] == " one two three")
            #expect(choice?["finish_reason"] == "length")
            #expect(choice?["logprobs"] == .null)
            // "Count:" is 6 bytes, plus BOS.
            #expect(json["usage"]?["prompt_tokens"] == 7)
            #expect(json["usage"]?["completion_tokens"] == 3)
            #expect(json["usage"]?["total_tokens"] == 10)
        }
        #expect(backend.jobs.count == 1)
        #expect(backend.jobs.first?.promptTokens == [1] + byteTokens("Count:"))
        #expect(backend.jobs.first?.maxTokens == 3)
    }

    @Test("max_tokens defaults to 16; a short script finishes with 'stop'")
    func defaultsAndStop() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": ["Count:"]}"#)
            #expect(reply.status == 200)
            #expect(reply.json["usage"]?["completion_tokens"] == 16)
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "length")
        }
        #expect(backend.jobs.last?.maxTokens == 16)

        backend.script = [" yes", "."]
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "Say yes", "max_tokens": 10}"#)
            #expect(reply.json["choices"]?[0]?["text"] == " yes.")
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "stop")
            #expect(reply.json["usage"]?["completion_tokens"] == 2)
        }
    }

    @Test("sampling fields reach the job; omitted ones keep llama.cpp's defaults")
    func samplingParameters() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let body = #"""
            {"prompt": "x", "temperature": 0.25, "top_p": 0.5, "top_k": 7, "min_p": 0.1,
             "repeat_penalty": 1.3, "repeat_last_n": 32, "seed": 1234, "model": "anything", "user": "u1"}
            """#
            let withSampling = try await client.post("/v1/completions", body)
            #expect(withSampling.status == 200)
            let randomSeed = try await client.post("/v1/completions", #"{"prompt": "x", "seed": -1}"#)
            #expect(randomSeed.status == 200)
        }
        let expected = SamplingParameters(temperature: 0.25, topK: 7, topP: 0.5, minP: 0.1,
                                          repeatPenalty: 1.3, repeatLastN: 32, seed: 1234)
        #expect(backend.jobs.first?.parameters == expected)
        #expect(backend.jobs.last?.parameters == SamplingParameters())
    }

    @Test("max_tokens 0 answers at once with no token")
    func zeroMaxTokens() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "x", "max_tokens": 0}"#)
            #expect(reply.status == 200)
            #expect(reply.json["choices"]?[0]?["text"] == "")
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "length")
            #expect(reply.json["usage"]?["completion_tokens"] == 0)
        }
        #expect(backend.jobs.map(\.maxTokens) == [0])
    }

    @Test("a prompt that fills the context is refused; max_tokens is clamped to the room left")
    func contextLimits() async throws {
        let backend = ScriptedBackend(contextLength: 32)
        try await withServer(backend) { client in
            // 31 bytes + BOS = 32 tokens = the whole context.
            let full = String(repeating: "a", count: 31)
            let refused = try await client.post("/v1/completions", #"{"prompt": "\#(full)"}"#)
            #expect(refused.status == 400)
            #expect(refused.errorParam == "prompt")
            #expect(refused.errorMessage?.contains("32 tokens") == true)
            #expect(refused.errorMessage?.contains("context holds 32") == true)

            let fits = String(repeating: "a", count: 29)  // 30 tokens, room for 2
            let reply = try await client.post("/v1/completions", #"{"prompt": "\#(fits)", "max_tokens": 1000}"#)
            #expect(reply.status == 200)
            #expect(reply.json["usage"]?["completion_tokens"] == 2)
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "length")
        }
        #expect(backend.jobs.map(\.maxTokens) == [2])
    }

    @Test("stop strings cut the text, also across two tokens, and end the job where they appear")
    func stopStrings() async throws {
        let backend = ScriptedBackend()
        backend.hangAfterScript = true  // the job can only end at the stop string (or by being cancelled)
        try await withServer(backend) { client in
            // " four" then " five": the stop string spans both tokens.
            let reply = try await client.post("/v1/completions", #"{"prompt": "x", "max_tokens": 50, "stop": "our fi"}"#)
            #expect(reply.status == 200)
            #expect(reply.json["choices"]?[0]?["text"] == " one two three f")
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "stop")
            #expect(reply.json["usage"]?["completion_tokens"] == 5)

            // The earliest of several stop strings wins.
            let several = try await client.post(
                "/v1/completions", #"{"prompt": "x", "max_tokens": 50, "stop": ["ten", " six", "seven"]}"#)
            #expect(several.json["choices"]?[0]?["text"] == " one two three four five,")
            #expect(several.json["choices"]?[0]?["finish_reason"] == "stop")
        }
        #expect(await backend.waitForTerminations(2) == ["finished", "finished"])
    }

    @Test("a stop string that never completes does not hold text back at the end")
    func stopStringPrefixReleased() async throws {
        let backend = ScriptedBackend(script: [" one", " tw"])
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "x", "stop": " two!"}"#)
            #expect(reply.json["choices"]?[0]?["text"] == " one tw")
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "stop")
        }
    }

    @Test("a backend failure is HTTP 503 with the reason, or the backend's own APIError")
    func backendFailure() async throws {
        let backend = ScriptedBackend()
        backend.failAfter = 2
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "x"}"#)
            #expect(reply.status == 503)
            #expect(reply.json["error"]?["type"] == "unavailable_error")
            #expect(reply.errorMessage?.contains("worker w2 stopped answering") == true)
            // The endpoint keeps serving.
            // A backend may refuse a job with its own APIError.
            backend.failAfter = 0
            backend.failure = APIError.invalidRequest("token id 40000 is outside the vocabulary", param: "prompt")
            let refused = try await client.post("/v1/completions", #"{"prompt": "x"}"#)
            #expect(refused.status == 400)
            #expect(refused.errorParam == "prompt")
            #expect(refused.errorMessage == "token id 40000 is outside the vocabulary")
            backend.failAfter = nil
            let afterRecovery = try await client.post("/v1/completions", #"{"prompt": "x"}"#)
            #expect(afterRecovery.status == 200)
        }
    }
}

@Suite("Streaming (server-sent events)")
struct StreamingTests {
    @Test("completion stream: text chunks, a finish chunk with usage, then [DONE]")
    func completionStream() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "x", "max_tokens": 4, "stream": true}"#)
            #expect(reply.status == 200)
            #expect(reply.contentType == "text/event-stream")
            let events = reply.events
            #expect(events.last == "[DONE]")
            let chunks = try events.dropLast().map { try JSONValue.parse($0) }
            #expect(chunks.count == 5)
            #expect(chunks.allSatisfy { $0["object"] == "text_completion" })
            let id = chunks.first?["id"]
            #expect(chunks.allSatisfy { $0["id"] == id })
            let texts = chunks.dropLast().map { $0["choices"]?[0]?["text"]?.stringValue ?? "?" }
            #expect(texts == [" one", " two", " three", " four"])
            #expect(chunks.dropLast().allSatisfy { $0["choices"]?[0]?["finish_reason"] == .null })
            let final = chunks.last
            #expect(final?["choices"]?[0]?["finish_reason"] == "length")
            #expect(final?["choices"]?[0]?["text"] == "")
            #expect(final?["usage"]?["prompt_tokens"] == 2)
            #expect(final?["usage"]?["completion_tokens"] == 4)
        }
    }

    @Test("chat stream: a role chunk first, content deltas, a finish chunk, then [DONE]")
    func chatStream() async throws {
        let backend = ScriptedBackend(script: [" Hi", " there", "!"])
        try await withServer(backend) { client in
            let reply = try await client.post(
                "/v1/chat/completions",
                #"{"messages": [{"role": "user", "content": "Hello"}], "stream": true}"#)
            #expect(reply.status == 200)
            let events = reply.events
            #expect(events.last == "[DONE]")
            let chunks = try events.dropLast().map { try JSONValue.parse($0) }
            #expect(chunks.allSatisfy { $0["object"] == "chat.completion.chunk" })
            #expect(chunks.first?["choices"]?[0]?["delta"]?["role"] == "assistant")
            let contents = chunks.dropFirst().dropLast().map {
                $0["choices"]?[0]?["delta"]?["content"]?.stringValue ?? "?"
            }
            #expect(contents == [" Hi", " there", "!"])
            #expect(chunks.last?["choices"]?[0]?["finish_reason"] == "stop")
            #expect(chunks.last?["choices"]?[0]?["delta"] == [:])
            #expect(chunks.last?["usage"]?["completion_tokens"] == 3)
        }
    }

    @Test("streamed stop string spanning two tokens: held-back text is never sent")
    func streamedStopString() async throws {
        let backend = ScriptedBackend(script: ["Hel", "lo", " wor", "ld", " again"])
        backend.hangAfterScript = true
        try await withServer(backend) { client in
            let reply = try await client.post(
                "/v1/completions", #"{"prompt": "x", "stream": true, "max_tokens": 50, "stop": ["lo wor"]}"#)
            let events = reply.events
            #expect(events.last == "[DONE]")
            let chunks = try events.dropLast().map { try JSONValue.parse($0) }
            let texts = chunks.dropLast().map { $0["choices"]?[0]?["text"]?.stringValue ?? "?" }
            // "l" and then "lo" could begin "lo wor", so they wait for the next token.
            #expect(texts == ["He", "l"])
            #expect(chunks.last?["choices"]?[0]?["finish_reason"] == "stop")
            #expect(chunks.last?["usage"]?["completion_tokens"] == 3)
        }
        // The backend itself ended the job at the stop string: nothing had to cancel it.
        #expect(await backend.waitForTerminations(1) == ["finished"])
    }

    @Test("streamed text held back for a stop string that does not complete is sent later")
    func heldBackThenReleased() async throws {
        let backend = ScriptedBackend(script: ["Hel", "lo", " wor", "ld"])
        try await withServer(backend) { client in
            let reply = try await client.post(
                "/v1/completions", #"{"prompt": "x", "stream": true, "stop": ["low", "rld!"]}"#)
            let chunks = try reply.events.dropLast().map { try JSONValue.parse($0) }
            let texts = chunks.dropLast().map { $0["choices"]?[0]?["text"]?.stringValue ?? "?" }
            // "l", "lo", "r" and "rld" could begin a stop string, so each waits for the next token;
            // "rld" is released when generation ends.
            #expect(texts == ["He", "l", "lo wo", "rld"])
            #expect(texts.joined() == "Hello world")
            #expect(chunks.last?["choices"]?[0]?["finish_reason"] == "stop")
        }
    }

    @Test("a backend failure mid-stream is sent as an error event")
    func streamedFailure() async throws {
        let backend = ScriptedBackend()
        backend.failAfter = 2
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "x", "stream": true}"#)
            #expect(reply.status == 200)
            let events = reply.events
            #expect(events.count == 3)
            #expect(events.contains("[DONE]") == false)
            let error = try JSONValue.parse(events.last ?? "")
            #expect(error["error"]?["type"] == "unavailable_error")
            #expect(error["error"]?["message"]?.stringValue?.contains("worker w2 stopped answering") == true)
        }
    }
}
