// libFuzzer harness: an HTTP request body as the endpoint reads it, `JSONValue.parse`, then
// what the `/v1/completions` and `/v1/chat/completions` routes do before a job reaches the
// model: `CompletionRequest(json:defaultMaxTokens:)` and `ChatCompletionRequest(json:...)`
// with the server's default limits (these read every field, including `grammar`,
// `json_schema` and `response_format`, whose grammars they compile), the prompt turned into
// token ids (a text prompt and each chat message by a byte-per-token stand-in for the
// tokenizer; the chat prompt through every `ChatTemplate`), and the job checks of
// `JobLimits.validate` that `ServingFrontend.submit` runs. Any input may be rejected with an
// error.

import FuzzDriver
import LlamaInference
import LlamaServer

let options = LlamaHTTPServer.Options()
let limits = JobLimits(contextLength: 512, vocabularySize: 32000, slotCount: 4)
let bos: Int32 = 1
let eos: Int32 = 2

/// One token per UTF-8 byte (ids 3...258), as a stand-in for the tokenizer.
func tokenize(_ text: String) -> [Int32] { text.utf8.map { Int32($0) + 3 } }

/// The control tokens of the chat templates, as a model's vocabulary would have them.
func special(_ text: String) -> Int32? {
    ["<|start_header_id|>": 31000, "<|end_header_id|>": 31001, "<|eot_id|>": 31002,
     "<|im_start|>": 31003, "<|im_end|>": 31004][text]
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let json = try? JSONValue.parse(bytes) else { return 0 }
    _ = json.serialized
    if let request = try? CompletionRequest(json: json, defaultMaxTokens: options.completionDefaultMaxTokens) {
        var job = request.settings.job
        switch request.prompt {
        case .text(let text): job.promptTokens = [bos] + tokenize(text)
        case .tokens(let ids): job.promptTokens = ids
        }
        if let checked = try? limits.validate(job) {
            precondition(checked.maxTokens != nil && checked.maxTokens! >= 0
                         && checked.maxTokens! + checked.promptTokens.count <= limits.contextLength,
                         "a validated job's max_tokens does not fit the context")
        }
    }
    if let request = try? ChatCompletionRequest(json: json, defaultMaxTokens: options.chatDefaultMaxTokens) {
        for template in ChatTemplate.allCases {
            var job = request.settings.job
            guard let tokens = try? template.promptTokens(request.messages, bos: bos, eos: eos, special: special,
                                                          tokenize: tokenize) else { continue }
            job.promptTokens = tokens
            _ = try? limits.validate(job)
        }
        _ = try? Llama2ChatTemplate.render(request.messages)
    }
    return 0
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_http_request_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
