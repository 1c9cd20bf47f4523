import TestSupport
import LlamaServer
import Testing

@Suite("POST /v1/chat/completions and the Llama 2 chat format")
struct ChatRouteTests {
    @Test("system + user + assistant + user: token ids, turn by turn, with BOS/EOS as control ids")
    func templateTokenIDs() async throws {
        let backend = ScriptedBackend(script: [" Sure", "."])
        try await withServer(backend) { client in
            let body = #"""
            {"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi <s>\n"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Count to two."}
            ]}
            """#
            let reply = try await client.post("/v1/chat/completions", body)
            #expect(reply.status == 200)
            #expect(reply.json["object"] == "chat.completion")
            #expect(reply.json["id"]?.stringValue?.hasPrefix("chatcmpl-") == true)
            #expect(reply.json["choices"]?[0]?["message"]?["role"] == "assistant")
            #expect(reply.json["choices"]?[0]?["message"]?["content"] == " Sure.")
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "stop")
        }
        // Each turn is tokenized on its own, without BOS; "<s>" typed by the user stays text.
        let firstTurn = "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi <s> [/INST] Hello! "
        let lastTurn = "[INST] Count to two. [/INST]"
        #expect(backend.tokenizedTexts == [firstTurn, lastTurn])
        let expected: [Int32] = [1] + byteTokens(firstTurn) + [2] + [1] + byteTokens(lastTurn)
        #expect(backend.jobs.first?.promptTokens == expected)
        // Chat has no default length limit: the job may fill the context.
        #expect(backend.jobs.first?.maxTokens == 256 - expected.count)
    }

    @Test("rendered prompt text matches the reference format")
    func renderedText() throws {
        let messages = [
            ChatMessage(role: .system, content: "SYS"),
            ChatMessage(role: .user, content: "U1"),
            ChatMessage(role: .assistant, content: " A1 "),
            ChatMessage(role: .user, content: "U2"),
        ]
        let text = try Llama2ChatTemplate.render(messages)
        #expect(text == "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]")
        #expect(try Llama2ChatTemplate.render([ChatMessage(role: .user, content: "Hi")]) == "<s>[INST] Hi [/INST]")
    }

    @Test("content as text parts, developer role, null assistant content, max_completion_tokens")
    func messageForms() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let body = #"""
            {"messages": [
                {"role": "developer", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": null},
                {"role": "user", "content": "R"}
            ], "max_completion_tokens": 2}
            """#
            let reply = try await client.post("/v1/chat/completions", body)
            #expect(reply.status == 200)
            #expect(reply.json["usage"]?["completion_tokens"] == 2)
        }
        #expect(backend.tokenizedTexts == ["[INST] <<SYS>>\nA\nB\n<</SYS>>\n\nQ [/INST]  ", "[INST] R [/INST]"])
        #expect(backend.jobs.first?.maxTokens == 2)
    }

    @Test("role order violations are 400 on 'messages'", arguments: [
        #"[{"role": "assistant", "content": "a"}]"#,
        #"[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]"#,
        #"[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]"#,
        #"[{"role": "system", "content": "s"}]"#,
        #"[{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "user", "content": "b"}]"#,
    ])
    func roleOrder(messages: String) async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/chat/completions", #"{"messages": \#(messages)}"#)
            #expect(reply.status == 400)
            #expect(reply.errorParam == "messages")
        }
        #expect(backend.jobs.isEmpty)
    }

    @Test("stop strings and usage in a chat completion")
    func chatStop() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post(
                "/v1/chat/completions",
                #"{"messages": [{"role": "user", "content": "Go"}], "stop": [" four"], "max_tokens": 10}"#)
            #expect(reply.json["choices"]?[0]?["message"]?["content"] == " one two three")
            #expect(reply.json["choices"]?[0]?["finish_reason"] == "stop")
            let promptTokens = 1 + byteTokens("[INST] Go [/INST]").count
            #expect(reply.json["usage"]?["prompt_tokens"] == .integer(Int64(promptTokens)))
            #expect(reply.json["usage"]?["completion_tokens"] == 4)
        }
    }
}
