import TestSupport
import Hummingbird
import LlamaServer
import Testing

@Suite("Invalid requests")
struct ValidationTests {
    /// A bad field of a completion request and the `param` the error must name.
    struct BadField: CustomTestStringConvertible, Sendable {
        var fields: String
        var param: String
        var testDescription: String { fields }
    }

    static let badCompletionFields: [BadField] = [
        BadField(fields: #""temperature": -0.5"#, param: "temperature"),
        BadField(fields: #""temperature": "hot""#, param: "temperature"),
        BadField(fields: #""temperature": 1e300"#, param: "temperature"),
        BadField(fields: #""top_p": 0"#, param: "top_p"),
        BadField(fields: #""top_p": 1.5"#, param: "top_p"),
        BadField(fields: #""top_k": -1"#, param: "top_k"),
        BadField(fields: #""top_k": 2.5"#, param: "top_k"),
        BadField(fields: #""min_p": 2"#, param: "min_p"),
        BadField(fields: #""repeat_penalty": 0"#, param: "repeat_penalty"),
        BadField(fields: #""repeat_last_n": -3"#, param: "repeat_last_n"),
        BadField(fields: #""seed": -2"#, param: "seed"),
        BadField(fields: #""seed": "abc""#, param: "seed"),
        BadField(fields: #""max_tokens": -1"#, param: "max_tokens"),
        BadField(fields: #""max_tokens": "ten""#, param: "max_tokens"),
        BadField(fields: #""max_tokens": 1.5"#, param: "max_tokens"),
        BadField(fields: #""stop": 5"#, param: "stop"),
        BadField(fields: #""stop": ["a", 1]"#, param: "stop"),
        BadField(fields: #""stop": ["a", "b", "c", "d", "e"]"#, param: "stop"),
        BadField(fields: #""stop": [""]"#, param: "stop"),
        BadField(fields: #""stream": "yes""#, param: "stream"),
        BadField(fields: #""n": 0"#, param: "n"),
        BadField(fields: #""n": 9"#, param: "n"),
        BadField(fields: #""n": 2, "best_of": 3"#, param: "best_of"),
        BadField(fields: #""echo": "yes""#, param: "echo"),
        BadField(fields: #""logprobs": 21"#, param: "logprobs"),
        BadField(fields: #""logprobs": -1"#, param: "logprobs"),
        BadField(fields: #""presence_penalty": 3"#, param: "presence_penalty"),
        BadField(fields: #""frequency_penalty": "x""#, param: "frequency_penalty"),
        BadField(fields: #""logit_bias": {"x": 1}"#, param: "logit_bias"),
        BadField(fields: #""logit_bias": {"5": 200}"#, param: "logit_bias"),
        BadField(fields: #""logit_bias": {"999": 1}"#, param: "logit_bias"),
        BadField(fields: #""logit_bias": [[5]]"#, param: "logit_bias"),
        BadField(fields: #""grammar": 5"#, param: "grammar"),
        BadField(fields: #""grammar": "root ::= missing""#, param: "grammar"),
        BadField(fields: #""response_format": {"type": "xml"}"#, param: "response_format"),
        BadField(fields: #""response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a+"}}}"#,
                 param: "response_format"),
        BadField(fields: #""response_format": {"type": "json_object"}, "grammar": "root ::= \"a\"""#, param: "response_format"),
        BadField(fields: #""cache_prompt": 1"#, param: "cache_prompt"),
        BadField(fields: #""speculative": "no""#, param: "speculative"),
        BadField(fields: #""suffix": "tail""#, param: "suffix"),
    ]

    @Test("each bad completion field is 400 naming it", arguments: badCompletionFields)
    func badCompletionField(_ bad: BadField) async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let reply = try await client.post("/v1/completions", #"{"prompt": "x", \#(bad.fields)}"#)
            #expect(reply.status == 400)
            #expect(reply.json["error"]?["type"] == "invalid_request_error")
            #expect(reply.errorParam == bad.param)
            #expect(reply.json["error"]?["code"] == .null)
            #expect(reply.errorMessage?.isEmpty == false)
        }
        #expect(backend.jobs.isEmpty)
    }

    /// Bad values of the fields log-probabilities, choices, bias, penalties and structured
    /// output add, with a word the message must hold (the unsupported keyword, say).
    static let badNewFields: [(String, String, String?)] = [
        (#""logprobs": "3""#, "logprobs", nil),
        (#""logprobs": 2.5"#, "logprobs", nil),
        (#""logprobs": 1000000000000"#, "logprobs", nil),
        (#""echo": 1"#, "echo", nil),
        (#""n": 5"#, "n", "1...4"),
        (#""n": -1"#, "n", nil),
        (#""n": "3""#, "n", nil),
        (#""logit_bias": 5"#, "logit_bias", nil),
        (#""logit_bias": "5:1""#, "logit_bias", nil),
        (#""logit_bias": {"-3": 1}"#, "logit_bias", nil),
        (#""logit_bias": {"5": "high"}"#, "logit_bias", nil),
        (#""logit_bias": {"5": true}"#, "logit_bias", nil),
        (#""logit_bias": {"5": -101}"#, "logit_bias", nil),
        (#""logit_bias": {"5": 1e300}"#, "logit_bias", nil),
        (#""logit_bias": [5]"#, "logit_bias", nil),
        (#""logit_bias": [[5, 1, 2]]"#, "logit_bias", nil),
        (#""logit_bias": [["a", 1]]"#, "logit_bias", nil),
        (#""logit_bias": [[5, "x"]]"#, "logit_bias", nil),
        (#""logit_bias": [[300, 1]]"#, "logit_bias", nil),
        (#""presence_penalty": -2.5"#, "presence_penalty", nil),
        (#""presence_penalty": "high""#, "presence_penalty", nil),
        (#""frequency_penalty": 2.01"#, "frequency_penalty", nil),
        (#""frequency_penalty": -3"#, "frequency_penalty", nil),
        (#""response_format": "json_object""#, "response_format", nil),
        (#""response_format": {"type": 5}"#, "response_format", nil),
        (#""response_format": {"type": "json_schema"}"#, "response_format", "schema"),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": 5}}"#, "response_format", nil),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "date"}}}"#, "response_format", nil),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": 0}}}"#,
         "response_format", "minimum"),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "format": "date"}}}"#,
         "response_format", "format"),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": {"allOf": [{"type": "string"}]}}}"#,
         "response_format", "allOf"),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}}}"#,
         "response_format", "uniqueItems"),
        (#""response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "patternProperties": {"^a": {}}}}}"#,
         "response_format", "patternProperties"),
        (##""response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/missing"}}}"##, "response_format", nil),
        (#""json_schema": {"type": "object", "propertyNames": {"maxLength": 3}}"#, "json_schema", "propertyNames"),
        (#""json_schema": [1]"#, "json_schema", nil),
        (#""grammar": """#, "grammar", nil),
        (#""grammar": "root ::= \"a""#, "grammar", nil),
        (#""grammar": "root ::= [a-""#, "grammar", nil),
        (#""grammar": "answer ::= \"yes\"""#, "grammar", "root"),
        (#""grammar": "root ::= root \"a\"""#, "grammar", nil),
        (#""grammar": "root ::= \"a\"{5,2}""#, "grammar", nil),
        (#""grammar": "root ::= \"a\" ::= \"b\"""#, "grammar", nil),
    ]

    @Test("each bad value of a log-probability, choice, bias, penalty or structured-output field is 400 naming it",
          arguments: 0..<badNewFields.count)
    func badNewField(_ index: Int) async throws {
        let (fields, param, mention) = Self.badNewFields[index]
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            for route in ["/v1/completions", "/v1/chat/completions"] {
                let head = route == "/v1/completions" ? #""prompt": "x""# : #""messages": [{"role": "user", "content": "q"}]"#
                // Chat takes logprobs as a boolean and echo not at all.
                if route != "/v1/completions" && (param == "logprobs" || param == "echo") { continue }
                let reply = try await client.post(route, "{\(head), \(fields)}")
                #expect(reply.status == 400, "\(route) \(fields): \(reply.text)")
                #expect(reply.errorParam == param, "\(route) \(fields): \(reply.text)")
                if let mention { #expect(reply.errorMessage?.contains(mention) == true, "\(reply.errorMessage ?? "")") }
            }
        }
        #expect(backend.jobs.isEmpty)
    }

    @Test("each bad chat field is 400 naming it", arguments: [
        BadField(fields: #""temperature": -1"#, param: "temperature"),
        BadField(fields: #""max_completion_tokens": -4"#, param: "max_completion_tokens"),
        BadField(fields: #""stop": {"a": 1}"#, param: "stop"),
        BadField(fields: #""top_logprobs": 3"#, param: "top_logprobs"),
        BadField(fields: #""logprobs": true, "top_logprobs": 30"#, param: "top_logprobs"),
        BadField(fields: #""logprobs": 3"#, param: "logprobs"),
        BadField(fields: #""logprobs": "yes""#, param: "logprobs"),
        BadField(fields: #""logprobs": true, "top_logprobs": -1"#, param: "top_logprobs"),
        BadField(fields: #""logprobs": true, "top_logprobs": "2""#, param: "top_logprobs"),
        BadField(fields: #""logprobs": true, "top_logprobs": 1.5"#, param: "top_logprobs"),
        BadField(fields: #""tools": [{"type": "function"}]"#, param: "tools"),
    ])
    func badChatField(_ bad: BadField) async throws {
        try await withServer(ScriptedBackend()) { client in
            let reply = try await client.post(
                "/v1/chat/completions", #"{"messages": [{"role": "user", "content": "q"}], \#(bad.fields)}"#)
            #expect(reply.status == 400)
            #expect(reply.errorParam == bad.param)
        }
    }

    @Test("missing or mistyped prompt and messages", arguments: [
        ("/v1/completions", #"{}"#, "prompt"),
        ("/v1/completions", #"{"prompt": null}"#, "prompt"),
        ("/v1/completions", #"{"prompt": 42}"#, "prompt"),
        ("/v1/completions", #"{"prompt": ["a", "b"]}"#, "prompt"),
        ("/v1/completions", #"{"prompt": []}"#, "prompt"),
        ("/v1/completions", #"{"prompt": [7, "a"]}"#, "prompt"),
        ("/v1/completions", #"{"prompt": [70000]}"#, "prompt"),
        ("/v1/completions", #"{"prompt": [5000000000]}"#, "prompt"),
        ("/v1/chat/completions", #"{}"#, "messages"),
        ("/v1/chat/completions", #"{"messages": "hi"}"#, "messages"),
        ("/v1/chat/completions", #"{"messages": []}"#, "messages"),
        ("/v1/chat/completions", #"{"messages": [42]}"#, "messages[0]"),
        ("/v1/chat/completions", #"{"messages": [{"content": "x"}]}"#, "messages[0].role"),
        ("/v1/chat/completions", #"{"messages": [{"role": "tool", "content": "x"}]}"#, "messages[0].role"),
        ("/v1/chat/completions", #"{"messages": [{"role": "user"}]}"#, "messages[0].content"),
        ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": 3}]}"#, "messages[0].content"),
        ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
         "messages[0].content"),
        ("/tokenize", #"{}"#, "content"),
        ("/tokenize", #"{"content": 5}"#, "content"),
        ("/tokenize", #"{"content": "a", "add_special": "yes"}"#, "add_special"),
        ("/detokenize", #"{}"#, "tokens"),
        ("/detokenize", #"{"tokens": "1 2"}"#, "tokens"),
        ("/detokenize", #"{"tokens": [1, -2]}"#, "tokens"),
        ("/detokenize", #"{"tokens": [1, 99999999999]}"#, "tokens"),
        ("/detokenize", #"{"tokens": [1.5]}"#, "tokens"),
        ("/detokenize", #"{"tokens": [1, 259]}"#, "tokens"),
    ])
    func missingFields(route: String, body: String, param: String) async throws {
        try await withServer(ScriptedBackend()) { client in
            let reply = try await client.post(route, body)
            #expect(reply.status == 400)
            #expect(reply.errorParam == param)
        }
    }

    static let garbageBodies: [String] = [
        "", "{", "}", "[", "null", "42", "\"text\"", "[1, 2]", "{\"prompt\": }", "{'prompt': 'x'}",
"{\"prompt\": \"x\"} trailing", "\u{FF}\u{FE}garbage", "nul", "{\"a\":1e999}",
        String(repeating: "[", count: 100_000), "{\"prompt\": \"\\ud800\"}", "{\"prompt\": \"a\u{01}b\"}",
    ]

    @Test("garbage bodies on every POST route are 400, and the server keeps serving")
    func garbageBodies() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            for route in ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"] {
                for body in Self.garbageBodies {
                    let reply = try await client.post(route, body)
                    #expect(reply.status == 400, "\(route) with \(body.prefix(40))")
                    #expect(reply.json["error"]?["type"] == "invalid_request_error")
                }
                // Invalid UTF-8 bytes, sent raw.
                let raw = try await client.executeRequest(
                    uri: route, method: .post, headers: [.contentType: "application/json"],
                    body: ByteBuffer(bytes: [0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D]))
                #expect(raw.status.code == 400)
            }
            let health = try await client.get("/health")
            #expect(health.status == 200)
            let completion = try await client.post("/v1/completions", #"{"prompt": "x", "max_tokens": 2}"#)
            #expect(completion.status == 200)
        }
        #expect(backend.jobs.count == 1)
    }

    @Test("a body over the size limit is 413")
    func oversizedBody() async throws {
        let options = LlamaHTTPServer.Options(maximumRequestBodyBytes: 1000)
        try await withServer(ScriptedBackend(), options: options) { client in
            let prompt = String(repeating: "a", count: 2000)
            let reply = try await client.post("/v1/completions", #"{"prompt": "\#(prompt)"}"#)
            #expect(reply.status == 413)
            #expect(reply.json["error"]?["message"] != nil)
        }
    }

    @Test("unknown routes and methods are 404 with a JSON error")
    func unknownRoutes() async throws {
        try await withServer(ScriptedBackend()) { client in
            for (method, path) in [(HTTPRequest.Method.get, "/v1/nothing"), (.get, "/v1/completions"), (.post, "/health")] {
                let reply = try await client.send(path, method: method, body: method == .post ? "{}" : nil)
                #expect(reply.status == 404)
                #expect(reply.json["error"]?["type"] == "not_found_error")
                #expect(reply.errorMessage?.contains(path) == true)
            }
        }
    }
}
