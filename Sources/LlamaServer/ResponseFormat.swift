// MARK: - Usage and outcome

/// Token counts of one completion.
public struct CompletionUsage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int { promptTokens + completionTokens }

    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }

    var json: JSONValue {
        [
            "prompt_tokens": JSONValue(promptTokens),
            "completion_tokens": JSONValue(completionTokens),
            "total_tokens": JSONValue(totalTokens),
        ]
    }
}

// MARK: - OpenAI objects

/// Builds the OpenAI response objects of one completion, whole or as stream chunks.
struct ResponseFormat: Sendable {
    enum Kind: Sendable {
        /// `/v1/completions`: `text_completion` objects with `choices[0].text`.
        case completion
        /// `/v1/chat/completions`: `chat.completion` / `chat.completion.chunk` with a message or delta.
        case chat
    }

    let kind: Kind
    let id: String
    let created: Int
    let model: String

    init(kind: Kind, model: String, created: Int) {
        self.kind = kind
        self.model = model
        self.created = created
        let prefix = kind == .completion ? "cmpl-" : "chatcmpl-"
        var generator = SystemRandomNumberGenerator()
        let digits = "0123456789abcdef"
        id = prefix + String((0 ..< 24).map { _ in digits.randomElement(using: &generator)! })
    }

    private func envelope(object: String, choice: JSONValue, usage: CompletionUsage?) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("id", .string(id)),
            ("object", .string(object)),
            ("created", JSONValue(created)),
            ("model", .string(model)),
            ("choices", [choice]),
        ]
        if let usage { members.append(("usage", usage.json)) }
        return .object(members)
    }

    /// The complete (non-streamed) response.
    func whole(text: String, finishReason: FinishReason, usage: CompletionUsage) -> JSONValue {
        switch kind {
        case .completion:
            return envelope(object: "text_completion", choice: [
                "index": 0, "text": .string(text), "logprobs": nil, "finish_reason": .string(finishReason.rawValue),
            ], usage: usage)
        case .chat:
            return envelope(object: "chat.completion", choice: [
                "index": 0,
                "message": ["role": "assistant", "content": .string(text)],
                "logprobs": nil,
                "finish_reason": .string(finishReason.rawValue),
            ], usage: usage)
        }
    }

    /// The chunk that opens a chat stream (`delta.role`); `nil` for plain completions.
    func openingChunk() -> JSONValue? {
        guard kind == .chat else { return nil }
        return envelope(object: "chat.completion.chunk", choice: [
            "index": 0, "delta": ["role": "assistant", "content": ""], "logprobs": nil, "finish_reason": nil,
        ], usage: nil)
    }

    /// A chunk carrying generated text.
    func textChunk(_ text: String) -> JSONValue {
        switch kind {
        case .completion:
            return envelope(object: "text_completion", choice: [
                "index": 0, "text": .string(text), "logprobs": nil, "finish_reason": nil,
            ], usage: nil)
        case .chat:
            return envelope(object: "chat.completion.chunk", choice: [
                "index": 0, "delta": ["content": .string(text)], "logprobs": nil, "finish_reason": nil,
            ], usage: nil)
        }
    }

    /// The last chunk: no text, the finish reason and the token counts.
    func finalChunk(finishReason: FinishReason, usage: CompletionUsage) -> JSONValue {
        switch kind {
        case .completion:
            return envelope(object: "text_completion", choice: [
                "index": 0, "text": "", "logprobs": nil, "finish_reason": .string(finishReason.rawValue),
            ], usage: usage)
        case .chat:
            return envelope(object: "chat.completion.chunk", choice: [
                "index": 0, "delta": [:], "logprobs": nil, "finish_reason": .string(finishReason.rawValue),
            ], usage: usage)
        }
    }
}
