import Foundation
import LlamaInference

// MARK: - Usage and outcome

/// Token counts of one request (every choice's tokens summed).
public struct CompletionUsage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int { promptTokens + completionTokens }

    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }

    var json: JSONValue {
        ["prompt_tokens": JSONValue(promptTokens), "completion_tokens": JSONValue(completionTokens),
         "total_tokens": JSONValue(totalTokens)]
    }
}

/// One finished choice.
struct ChoiceResult {
    var text = ""
    var tokens: [TokenLogprob] = []
    var finishReason: FinishReason?
    var completionTokens = 0
}

// MARK: - Log-probabilities

/// The text of a token for `tokens`/`token` fields (invalid UTF-8 shows as U+FFFD; `bytes`
/// carries the exact bytes).
func tokenText(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// Unicode scalars in `bytes` (its valid UTF-8 characters; each invalid byte counts one).
func scalarCount(_ bytes: [UInt8]) -> Int { bytes.reduce(0) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) } }

/// OpenAI's legacy completions `logprobs` object for `tokens` whose text starts at
/// character `offset` of the choice's text; returns the object and the offset after them.
func legacyLogprobs(_ tokens: [TokenLogprob], offset: Int) -> (JSONValue, Int) {
    var at = offset
    var texts: [JSONValue] = [], lps: [JSONValue] = [], tops: [JSONValue] = [], offsets: [JSONValue] = []
    for t in tokens {
        texts.append(.string(tokenText(t.bytes)))
        lps.append(t.logprob.map { JSONValue(Double($0)) } ?? .null)
        tops.append(t.logprob == nil ? .null : .object(t.top.map { (tokenText($0.bytes), JSONValue(Double($0.logprob))) }))
        offsets.append(JSONValue(max(0, at)))
        at += scalarCount(t.bytes)
    }
    return (["tokens": .array(texts), "token_logprobs": .array(lps), "top_logprobs": .array(tops),
             "text_offset": .array(offsets)], at)
}

/// The chat `logprobs` object: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
func chatLogprobs(_ tokens: [TokenLogprob]) -> JSONValue {
    func entry(_ text: String, _ bytes: [UInt8], _ lp: Float) -> [(String, JSONValue)] {
        [("token", .string(text)), ("logprob", JSONValue(Double(lp))), ("bytes", .array(bytes.map { JSONValue(Int($0)) }))]
    }
    return ["content": .array(tokens.map { t in
        .object(entry(tokenText(t.bytes), t.bytes, t.logprob ?? 0)
            + [("top_logprobs", .array(t.top.map { .object(entry(tokenText($0.bytes), $0.bytes, $0.logprob)) }))])
    })]
}

// MARK: - OpenAI objects

/// Builds the OpenAI response objects of one request, whole or as stream chunks.
struct ResponseFormat: Sendable {
    enum Kind: Sendable {
        /// `/v1/completions`: `text_completion` objects with `choices[i].text`.
        case completion
        /// `/v1/chat/completions`: `chat.completion` / `chat.completion.chunk` with a message or delta.
        case chat
    }

    let kind: Kind
    let id: String
    let created: Int
    let model: String
    /// Whether choices carry log-probabilities.
    let logprobs: Bool

    init(kind: Kind, model: String, created: Int, logprobs: Bool = false) {
        self.kind = kind
        self.model = model
        self.created = created
        self.logprobs = logprobs
        let prefix = kind == .completion ? "cmpl-" : "chatcmpl-"
        var generator = SystemRandomNumberGenerator()
        let digits = "0123456789abcdef"
        id = prefix + String((0 ..< 24).map { _ in digits.randomElement(using: &generator)! })
    }

    private func envelope(object: String, choices: [JSONValue], usage: CompletionUsage?) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("id", .string(id)), ("object", .string(object)), ("created", JSONValue(created)),
            ("model", .string(model)), ("choices", .array(choices)),
        ]
        if let usage { members.append(("usage", usage.json)) }
        return .object(members)
    }

    private func logprobsValue(_ tokens: [TokenLogprob], offset: Int) -> JSONValue {
        guard logprobs else { return .null }
        return kind == .completion ? legacyLogprobs(tokens, offset: offset).0 : chatLogprobs(tokens)
    }

    /// The complete (non-streamed) response; `offset` is where each choice's first token
    /// starts (negative by the tokenizer's space prefix when the prompt is echoed).
    func whole(_ choices: [ChoiceResult], usage: CompletionUsage, offset: Int = 0) -> JSONValue {
        let list: [JSONValue] = choices.enumerated().map { i, c in
            let reason = JSONValue(c.finishReason?.rawValue)
            switch kind {
            case .completion:
                return ["index": JSONValue(i), "text": .string(c.text), "logprobs": logprobsValue(c.tokens, offset: offset),
                        "finish_reason": reason]
            case .chat:
                return ["index": JSONValue(i), "message": ["role": "assistant", "content": .string(c.text)],
                        "logprobs": logprobsValue(c.tokens, offset: 0), "finish_reason": reason]
            }
        }
        return envelope(object: kind == .completion ? "text_completion" : "chat.completion", choices: list, usage: usage)
    }

    /// The chunk that opens a chat stream's choice (`delta.role`); nil for plain completions.
    func openingChunk(choice: Int) -> JSONValue? {
        guard kind == .chat else { return nil }
        return envelope(object: "chat.completion.chunk", choices: [[
            "index": JSONValue(choice), "delta": ["role": "assistant", "content": ""], "logprobs": nil, "finish_reason": nil,
        ]], usage: nil)
    }

    /// A chunk carrying text of one choice and its tokens; `offset` is where its text starts.
    func textChunk(choice: Int, text: String, tokens: [TokenLogprob], offset: Int) -> JSONValue {
        let lp = logprobsValue(tokens, offset: offset)
        switch kind {
        case .completion:
            return envelope(object: "text_completion", choices: [[
                "index": JSONValue(choice), "text": .string(text), "logprobs": lp, "finish_reason": nil,
            ]], usage: nil)
        case .chat:
            return envelope(object: "chat.completion.chunk", choices: [[
                "index": JSONValue(choice), "delta": ["content": .string(text)], "logprobs": lp, "finish_reason": nil,
            ]], usage: nil)
        }
    }

    /// A choice's last chunk: no text, the finish reason (and the usage, on the last choice).
    func finalChunk(choice: Int, finishReason: FinishReason, usage: CompletionUsage?) -> JSONValue {
        switch kind {
        case .completion:
            return envelope(object: "text_completion", choices: [[
                "index": JSONValue(choice), "text": "", "logprobs": nil, "finish_reason": .string(finishReason.rawValue),
            ]], usage: usage)
        case .chat:
            return envelope(object: "chat.completion.chunk", choices: [[
                "index": JSONValue(choice), "delta": [:], "logprobs": nil, "finish_reason": .string(finishReason.rawValue),
            ]], usage: usage)
        }
    }
}
