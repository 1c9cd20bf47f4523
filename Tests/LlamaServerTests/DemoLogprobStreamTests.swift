import Foundation
import LlamaInference
import LlamaServer
import TestSupport
import Testing

/// Chat log-probabilities, streamed log-probabilities and the cluster's, on the demo model,
/// against the log-softmax of the test's own engine.
@Suite("Chat and streamed log-probabilities on the demo model", .serialized, .timeLimit(.minutes(5)))
struct DemoLogprobStreamTests {
    static let messages = [ChatMessage(role: .system, content: "You tell short stories."),
                           ChatMessage(role: .user, content: "Tell me about a cat.")]
    static let messagesJSON = #"[{"role": "system", "content": "You tell short stories."}, {"role": "user", "content": "Tell me about a cat."}]"#

    static func chatPrompt(_ backend: any CompletionBackend) throws -> [Int32] {
        try Llama2ChatTemplate.promptTokens(messages, bos: backend.info.bosID, eos: backend.info.eosID) {
            backend.tokenize($0, addBOS: false)
        }
    }

    /// Checks chat `logprobs.content` entries against the reference rows of `ids`.
    static func checkChat(_ content: [JSONValue], ids: [Int32], rows: [[Float]], top: Int, backend: any CompletionBackend,
                          _ where_: String) {
        #expect(content.count == ids.count, "\(where_): \(content.count) entries for \(ids.count) tokens")
        for (i, entry) in content.enumerated() where i < ids.count {
            let bytes = backend.piece(ids[i])
            #expect(entry["token"]?.stringValue == String(decoding: bytes, as: UTF8.self), "\(where_): token \(i)")
            #expect(entry["bytes"] == .array(bytes.map { JSONValue(Int($0)) }), "\(where_): bytes \(i)")
            #expect(close(entry["logprob"]?.doubleValue, ReferenceScorer.logprob(rows[i], ids[i])), "\(where_): logprob \(i)")
            guard case let .array(alternatives)? = entry["top_logprobs"] else {
                Issue.record("\(where_): top_logprobs[\(i)] missing")
                continue
            }
            let best = ReferenceScorer.ranked(rows[i], top: top)
            #expect(alternatives.count == top)
            for (k, b) in best.enumerated() where k < alternatives.count {
                #expect(alternatives[k]["token"]?.stringValue == String(decoding: backend.piece(b), as: UTF8.self))
                #expect(alternatives[k]["bytes"] == .array(backend.piece(b).map { JSONValue(Int($0)) }))
                #expect(close(alternatives[k]["logprob"]?.doubleValue, ReferenceScorer.logprob(rows[i], b)))
            }
        }
    }

    @Test("chat: logprobs true with top_logprobs N, whole and streamed")
    func chat() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            let ids = try Self.chatPrompt(backend)
            let (greedy, rows) = try scorer.greedy(prompt: ids, count: 10, stopAt: backend.info.eosID)
            try #require(!greedy.isEmpty)
            let body = #"{"messages": \#(Self.messagesJSON), "max_tokens": 10, "temperature": 0, "logprobs": true, "top_logprobs": 4"#
            let whole = try await client.post("/v1/chat/completions", body + "}")
            #expect(whole.status == 200)
            guard case let .array(content)? = whole.json["choices"]?[0]?["logprobs"]?["content"] else {
                Issue.record("no logprobs.content: \(whole.text)")
                return
            }
            Self.checkChat(content, ids: greedy, rows: rows, top: 4, backend: backend, "chat")

            let streamed = try await client.post("/v1/chat/completions", body + #", "stream": true}"#)
            var entries: [JSONValue] = []
            var text = ""
            for chunk in streamed.streamedChunks {
                text += chunk["choices"]?[0]?["delta"]?["content"]?.stringValue ?? ""
                if case let .array(part)? = chunk["choices"]?[0]?["logprobs"]?["content"] { entries += part }
            }
            #expect(text == whole.json["choices"]?[0]?["message"]?["content"]?.stringValue)
            Self.checkChat(entries, ids: greedy, rows: rows, top: 4, backend: backend, "chat stream")
        }
    }

    /// The legacy objects of a completion stream's chunks joined into one, and the text.
    static func joinLegacy(_ chunks: [JSONValue]) -> (JSONValue, String) {
        var tokens: [JSONValue] = [], values: [JSONValue] = [], tops: [JSONValue] = [], offsets: [JSONValue] = []
        var text = ""
        var chunksWithTokens = 0
        for chunk in chunks {
            text += chunk["choices"]?[0]?["text"]?.stringValue ?? ""
            guard let lp = chunk["choices"]?[0]?["logprobs"], lp != .null else { continue }
            if case let .array(t)? = lp["tokens"] { tokens += t; chunksWithTokens += t.isEmpty ? 0 : 1 }
            if case let .array(v)? = lp["token_logprobs"] { values += v }
            if case let .array(v)? = lp["top_logprobs"] { tops += v }
            if case let .array(v)? = lp["text_offset"] { offsets += v }
        }
        #expect(chunksWithTokens > 1, "log-probabilities come with the chunks, not all at once")
        return (["tokens": .array(tokens), "token_logprobs": .array(values), "top_logprobs": .array(tops),
                 "text_offset": .array(offsets)], text)
    }

    @Test("a completion stream carries each chunk's log-probabilities, the echoed prompt's first")
    func completionStream() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            let prompt = DemoLogprobTests.prompt
            let ids = backend.tokenize(prompt, addBOS: true)
            let (greedy, rows) = try scorer.greedy(prompt: ids, count: 8, stopAt: backend.info.eosID)
            for echo in [false, true] {
                let reply = try await client.post("/v1/completions", #"""
                    {"prompt": "\#(prompt)", "max_tokens": 8, "temperature": 0, "logprobs": 3, "echo": \#(echo), "stream": true}
                    """#)
                #expect(reply.status == 200)
                let chunks = reply.streamedChunks
                let (joined, text) = Self.joinLegacy(chunks)
                let generated = String(decoding: greedy.flatMap { backend.piece($0) }, as: UTF8.self)
                #expect(text == (echo ? prompt : "") + generated)
                if echo {
                    let promptRows = try scorer.rows(prompt: ids)
                    DemoLogprobTests.checkLegacy(joined, ids: ids + greedy, rows: [nil] + promptRows.dropLast().map { $0 } + rows.map { $0 },
                                                 top: 3, text: text, backend: backend, "stream, echo")
                } else {
                    DemoLogprobTests.checkLegacy(joined, ids: greedy, rows: rows.map { $0 }, top: 3, text: text,
                                                 backend: backend, "stream")
                }
            }
        }
    }

    @Test("through an in-memory cluster: echo scoring and chat logprobs equal the engine's log-softmax")
    func cluster() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoCluster { backend, client in
            let prompt = DemoLogprobTests.prompt
            let ids = backend.tokenize(prompt, addBOS: true)
            let rows = try scorer.rows(prompt: ids)
            let scored = try await client.post("/v1/completions",
                #"{"prompt": "\#(prompt)", "max_tokens": 0, "echo": true, "logprobs": 2}"#)
            #expect(scored.status == 200)
            DemoLogprobTests.checkLegacy(scored.json["choices"]?[0]?["logprobs"], ids: ids, rows: [nil] + rows.dropLast().map { $0 },
                                         top: 2, text: scored.json["choices"]?[0]?["text"]?.stringValue ?? "", backend: backend,
                                         "cluster echo")
            let chatIDs = try Self.chatPrompt(backend)
            let (greedy, chatRows) = try scorer.greedy(prompt: chatIDs, count: 6, stopAt: backend.info.eosID)
            let chat = try await client.post("/v1/chat/completions", #"""
                {"messages": \#(Self.messagesJSON), "max_tokens": 6, "temperature": 0, "logprobs": true, "top_logprobs": 2}
                """#)
            guard case let .array(content)? = chat.json["choices"]?[0]?["logprobs"]?["content"] else {
                Issue.record("no logprobs.content: \(chat.text)")
                return
            }
            Self.checkChat(content, ids: greedy, rows: chatRows, top: 2, backend: backend, "cluster chat")
        }
    }
}
