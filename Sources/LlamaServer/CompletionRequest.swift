import LlamaGrammar
import LlamaInference
import LlamaSampling

// MARK: - Parsed requests

/// What both completion routes read from a request body: the job's settings (the prompt
/// tokens are filled in once the prompt is tokenized) and how to answer. Types are checked
/// here, each error naming the field; value ranges are checked once, by the backend.
public struct GenerationSettings: Sendable {
    public var job: CompletionJob
    /// Whether the answer is sent as server-sent events.
    public var stream: Bool
    /// The field the token limit came from (`max_tokens` or `max_completion_tokens`).
    public var maxTokensKey = "max_tokens"

    public init(job: CompletionJob = CompletionJob(promptTokens: []), stream: Bool = false) {
        self.job = job
        self.stream = stream
    }
}

/// A `/v1/completions` request.
public struct CompletionRequest: Sendable {
    /// The prompt: text (BOS is added when tokenized) or token ids (used as they are).
    public enum Prompt: Sendable, Equatable {
        case text(String)
        case tokens([Int32])
    }

    public var prompt: Prompt
    public var settings: GenerationSettings

    /// Reads and checks a request body.
    /// - Throws: ``APIError`` (HTTP 400) naming the field at fault.
    public init(json: JSONValue, defaultMaxTokens: Int? = 16) throws {
        let fields = try RequestFields(json)
        guard let promptValue = fields.value("prompt") else {
            throw APIError.invalidRequest("'prompt' is required", param: "prompt")
        }
        prompt = try Self.prompt(promptValue)
        try fields.rejectUnsupported(["suffix": .emptyString])
        settings = try fields.generationSettings(maxTokenKeys: ["max_tokens"], defaultMaxTokens: defaultMaxTokens)
        if let n = try fields.integer("best_of"), n != Int64(settings.job.choices) {
            throw APIError.invalidRequest("'best_of' = \(n) is not supported (only best_of = n)", param: "best_of")
        }
        settings.job.echo = try fields.bool("echo") ?? false
        // An integer (OpenAI), or true for the chosen tokens alone (false: none).
        if case let .bool(wanted)? = fields.value("logprobs") {
            settings.job.logprobs = wanted ? 0 : nil
        } else if let n = try fields.integer("logprobs") {
            settings.job.logprobs = Int(clamping: n)
        }
    }

    private static func prompt(_ value: JSONValue) throws -> Prompt {
        switch value {
        case let .string(text):
            return .text(text)
        case let .array(elements) where elements.count == 1 && elements[0].stringValue != nil:
            return .text(elements[0].stringValue!)
        case let .array(elements) where !elements.isEmpty && elements.allSatisfy({ $0.integerValue != nil }):
            return .tokens(try elements.enumerated().map { i, e in
                guard let id = Int32(exactly: e.integerValue!) else {
                    throw APIError.invalidRequest("prompt[\(i)] = \(e.serialized) is not a token id", param: "prompt")
                }
                return id
            })
        default:
            throw APIError.invalidRequest(
                "'prompt' must be a string, an array of exactly one string, or an array of token ids, not \(value.typeName)",
                param: "prompt")
        }
    }
}

/// A `/v1/chat/completions` request.
public struct ChatCompletionRequest: Sendable {
    public var messages: [ChatMessage]
    public var settings: GenerationSettings

    /// Reads and checks a request body.
    /// - Throws: ``APIError`` (HTTP 400) naming the field at fault.
    public init(json: JSONValue, defaultMaxTokens: Int? = nil) throws {
        let fields = try RequestFields(json)
        guard let messagesValue = fields.value("messages") else {
            throw APIError.invalidRequest("'messages' is required", param: "messages")
        }
        guard case let .array(elements) = messagesValue else {
            throw APIError.invalidRequest(
                "'messages' must be an array of messages, not \(messagesValue.typeName)", param: "messages")
        }
        guard !elements.isEmpty else {
            throw APIError.invalidRequest("'messages' must hold at least one message", param: "messages")
        }
        messages = try elements.enumerated().map { index, element in
            try ChatCompletionRequest.message(element, index: index)
        }
        try fields.rejectUnsupported(["tools": .emptyArray, "functions": .emptyArray])
        settings = try fields.generationSettings(maxTokenKeys: ["max_tokens", "max_completion_tokens"],
                                                 defaultMaxTokens: defaultMaxTokens)
        let wantsLogprobs = try fields.bool("logprobs") ?? false
        let top = try fields.integer("top_logprobs")
        if top != nil && !wantsLogprobs {
            throw APIError.invalidRequest("'top_logprobs' needs 'logprobs': true", param: "top_logprobs")
        }
        if wantsLogprobs { settings.job.logprobs = Int(clamping: top ?? 0) }
    }

    static func message(_ value: JSONValue, index: Int) throws -> ChatMessage {
        let path = "messages[\(index)]"
        guard case .object = value else {
            throw APIError.invalidRequest("\(path) must be an object, not \(value.typeName)", param: path)
        }
        guard let roleValue = value["role"], case let .string(roleName) = roleValue else {
            throw APIError.invalidRequest("\(path).role must be a string", param: "\(path).role")
        }
        let role: ChatRole
        switch roleName {
        case "system", "developer": role = .system
        case "user": role = .user
        case "assistant": role = .assistant
        default:
            throw APIError.invalidRequest(
                "\(path).role '\(roleName)' is not supported (use system, user or assistant)", param: "\(path).role")
        }
        let content: String
        switch value["content"] ?? .null {
        case let .string(text):
            content = text
        case .null where role == .assistant:
            content = ""
        case let .array(parts):
            content = try parts.enumerated().map { partIndex, part in
                guard part["type"]?.stringValue == "text", let text = part["text"]?.stringValue else {
                    throw APIError.invalidRequest(
                        "\(path).content[\(partIndex)] must be {\"type\": \"text\", \"text\": string}: only text is supported",
                        param: "\(path).content")
                }
                return text
            }.joined(separator: "\n")
        case let other:
            throw APIError.invalidRequest(
                "\(path).content must be a string or an array of text parts, not \(other.typeName)",
                param: "\(path).content")
        }
        return ChatMessage(role: role, content: content)
    }
}

// MARK: - Field access

/// The members of a request object, read with type checks that name the field at fault.
struct RequestFields {
    let object: JSONValue

    init(_ json: JSONValue) throws {
        guard case .object = json else {
            throw APIError.invalidRequest("the request body must be a JSON object, not \(json.typeName)")
        }
        object = json
    }

    /// The value of `key`; `nil` when absent or JSON null.
    func value(_ key: String) -> JSONValue? {
        guard let value = object[key], value != .null else { return nil }
        return value
    }

    func number(_ key: String) throws -> Double? {
        guard let value = value(key) else { return nil }
        guard let number = value.doubleValue else {
            throw APIError.invalidRequest("'\(key)' must be a number, not \(value.typeName)", param: key)
        }
        return number
    }

    func integer(_ key: String) throws -> Int64? {
        guard let value = value(key) else { return nil }
        guard let integer = value.integerValue else {
            throw APIError.invalidRequest("'\(key)' must be an integer, not \(value.serialized)", param: key)
        }
        return integer
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = value(key) else { return nil }
        guard case let .bool(flag) = value else {
            throw APIError.invalidRequest("'\(key)' must be true or false, not \(value.typeName)", param: key)
        }
        return flag
    }

    /// Values a field may hold without asking for a feature this endpoint does not have.
    enum Neutral {
        case emptyString, emptyArray

        func accepts(_ value: JSONValue) -> Bool {
            switch (self, value) {
            case (.emptyString, .string("")): return true
            case (.emptyArray, .array(let elements)): return elements.isEmpty
            default: return false
            }
        }
    }

    /// Throws for a field set to a value that asks for something not implemented.
    func rejectUnsupported(_ fields: [String: Neutral]) throws {
        for (key, neutral) in fields.sorted(by: { $0.key < $1.key }) {
            if let value = value(key), !neutral.accepts(value) {
                throw APIError.invalidRequest("'\(key)' = \(value.serialized) is not supported", param: key)
            }
        }
    }

    /// Reads the sampling, length, stop, stream, choice, grammar and cache fields common to
    /// both routes.
    func generationSettings(maxTokenKeys: [String], defaultMaxTokens: Int?) throws -> GenerationSettings {
        var job = CompletionJob(promptTokens: [], maxTokens: defaultMaxTokens)
        var p = SamplingParameters()
        if let v = try number("temperature") { p.temperature = Float(v) }
        if let v = try number("top_p") { p.topP = Float(v) }
        if let v = try number("min_p") { p.minP = Float(v) }
        if let v = try number("repeat_penalty") { p.repeatPenalty = Float(v) }
        if let v = try number("presence_penalty") { p.presencePenalty = Float(v) }
        if let v = try number("frequency_penalty") { p.frequencyPenalty = Float(v) }
        if let v = try integer("top_k") { p.topK = Int(clamping: v) }
        if let v = try integer("repeat_last_n") { p.repeatLastN = Int(clamping: v) }
        if let v = try integer("seed") {
            guard v >= -1 else {
                throw APIError.invalidRequest("'seed' must be >= 0, or -1 for a random seed; got \(v)", param: "seed")
            }
            p.seed = v == -1 ? nil : UInt64(v)
        }
        p.logitBias = try logitBias()
        job.parameters = p
        var maxTokensKey = "max_tokens"
        for key in maxTokenKeys {
            guard let v = try integer(key) else { continue }
            job.maxTokens = Int(clamping: v)
            maxTokensKey = key
            break
        }
        job.stop = try stopStrings()
        if let n = try integer("n") { job.choices = Int(clamping: n) }
        job.cachePrompt = try bool("cache_prompt") ?? true
        job.speculative = try bool("speculative") ?? true
        job.grammar = try grammar()
        var settings = GenerationSettings(job: job, stream: try bool("stream") ?? false)
        settings.maxTokensKey = maxTokensKey
        return settings
    }

    private func stopStrings() throws -> [String] {
        switch value("stop") {
        case nil:
            return []
        case let .string(text)?:
            return [text]
        case let .array(elements)?:
            return try elements.map { element in
                guard case let .string(text) = element else {
                    throw APIError.invalidRequest("'stop' must hold strings, not \(element.typeName)", param: "stop")
                }
                return text
            }
        case let other?:
            throw APIError.invalidRequest("'stop' must be a string or an array of strings, not \(other.typeName)", param: "stop")
        }
    }

    /// OpenAI's `{"token id": bias}` or llama.cpp's `[[id, bias], ...]` (`false` bans a token).
    private func logitBias() throws -> [Int32: Float] {
        func entry(_ key: String, _ v: JSONValue) throws -> (Int32, Float) {
            guard let id = Int32(key) else {
                throw APIError.invalidRequest("'logit_bias' key \(key.debugDescription) is not a token id", param: "logit_bias")
            }
            if case .bool(false) = v { return (id, -100) }
            guard let b = v.doubleValue else {
                throw APIError.invalidRequest("'logit_bias' value for token \(id) must be a number, not \(v.typeName)", param: "logit_bias")
            }
            return (id, Float(b))
        }
        var bias: [Int32: Float] = [:]
        switch value("logit_bias") {
        case nil:
            break
        case let .object(members)?:
            for (k, v) in members { let (id, b) = try entry(k, v); bias[id] = b }
        case let .array(pairs)?:
            for (i, pair) in pairs.enumerated() {
                guard case let .array(two) = pair, two.count == 2, let id = two[0].integerValue else {
                    throw APIError.invalidRequest("logit_bias[\(i)] must be [token id, bias]", param: "logit_bias")
                }
                let (t, b) = try entry(String(id), two[1])
                bias[t] = b
            }
        case let other?:
            throw APIError.invalidRequest("'logit_bias' must be an object of token id to bias, not \(other.typeName)", param: "logit_bias")
        }
        return bias
    }

    /// The grammar from `grammar` (GBNF), `json_schema`, or `response_format`.
    private func grammar() throws -> Grammar? {
        var sources: [(String, String)] = []
        if let g = value("grammar") {
            guard case let .string(text) = g else {
                throw APIError.invalidRequest("'grammar' must be a GBNF string, not \(g.typeName)", param: "grammar")
            }
            sources.append(("grammar", text))
        }
        if let schema = value("json_schema") {
            sources.append(("json_schema", try gbnf(schema: schema, param: "json_schema")))
        }
        if let format = value("response_format") {
            guard case .object = format, let type = format["type"]?.stringValue else {
                throw APIError.invalidRequest("'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}",
                                              param: "response_format")
            }
            switch type {
            case "text":
                break
            case "json_object":
                if let schema = format["schema"] {
                    sources.append(("response_format", try gbnf(schema: schema, param: "response_format")))
                } else {
                    sources.append(("response_format", Grammar.jsonObjectGBNF))
                }
            case "json_schema":
                guard let schema = format["json_schema"]?["schema"] ?? format["schema"] else {
                    throw APIError.invalidRequest("'response_format' of type json_schema needs json_schema.schema",
                                                  param: "response_format")
                }
                sources.append(("response_format", try gbnf(schema: schema, param: "response_format")))
            default:
                throw APIError.invalidRequest("'response_format' type \(type.debugDescription) is not supported (text, json_object, json_schema)",
                                              param: "response_format")
            }
        }
        guard let (param, text) = sources.first else { return nil }
        guard sources.count == 1 else {
            throw APIError.invalidRequest("give only one of 'grammar', 'json_schema' and 'response_format'", param: sources[1].0)
        }
        do {
            return try Grammar(gbnf: text)
        } catch {
            throw APIError.invalidRequest("'\(param)': \(error)", param: param)
        }
    }

    private func gbnf(schema: JSONValue, param: String) throws -> String {
        do {
            return try Grammar.gbnf(jsonSchema: schema.schemaValue)
        } catch {
            throw APIError.invalidRequest("'\(param)': \(error)", param: param)
        }
    }
}

extension JSONValue {
    /// The value as the grammar module takes a JSON schema.
    var schemaValue: JSONSchemaValue {
        switch self {
        case .null: return .null
        case let .bool(b): return .bool(b)
        case let .integer(i): return .number(Double(i))
        case let .number(d): return .number(d)
        case let .string(s): return .string(s)
        case let .array(a): return .array(a.map(\.schemaValue))
        case let .object(m): return .object(m.map { ($0.0, $0.1.schemaValue) })
        }
    }
}
