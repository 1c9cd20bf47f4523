import LlamaSampling

// MARK: - Parsed requests

/// Settings shared by `/v1/completions` and `/v1/chat/completions`, read and range-checked.
public struct GenerationSettings: Sendable, Equatable {
    /// Sampler settings; fields the request leaves out keep llama.cpp's defaults.
    public var parameters: SamplingParameters
    /// `max_tokens` as requested; `nil` when absent or null (the route's default applies).
    public var maxTokens: Int?
    /// Strings that end generation (at most ``GenerationSettings/maximumStopStrings``).
    public var stop: [String]
    /// Whether the answer is sent as server-sent events.
    public var stream: Bool

    /// At most this many stop strings, as the OpenAI API allows.
    public static let maximumStopStrings = 4

    public init(parameters: SamplingParameters = SamplingParameters(), maxTokens: Int? = nil,
                stop: [String] = [], stream: Bool = false) {
        self.parameters = parameters
        self.maxTokens = maxTokens
        self.stop = stop
        self.stream = stream
    }
}

/// A `/v1/completions` request.
public struct CompletionRequest: Sendable, Equatable {
    public var prompt: String
    public var settings: GenerationSettings

    /// Reads and checks a request body.
    /// - Throws: ``APIError`` (HTTP 400) naming the field at fault.
    public init(json: JSONValue) throws {
        let fields = try RequestFields(json)
        guard let promptValue = fields.value("prompt") else {
            throw APIError.invalidRequest("'prompt' is required", param: "prompt")
        }
        switch promptValue {
        case let .string(text):
            prompt = text
        case let .array(elements):
            guard elements.count == 1, case let .string(text) = elements[0] else {
                throw APIError.invalidRequest(
                    "'prompt' must be a string or an array of exactly one string", param: "prompt")
            }
            prompt = text
        default:
            throw APIError.invalidRequest(
                "'prompt' must be a string or an array of exactly one string, not \(promptValue.typeName)",
                param: "prompt")
        }
        try fields.rejectUnsupported(["echo": .boolFalse, "logprobs": .zeroOrFalse, "best_of": .one, "suffix": .emptyString])
        settings = try fields.generationSettings(maxTokenKeys: ["max_tokens"])
    }
}

/// A `/v1/chat/completions` request.
public struct ChatCompletionRequest: Sendable, Equatable {
    public var messages: [ChatMessage]
    public var settings: GenerationSettings

    /// Reads and checks a request body.
    /// - Throws: ``APIError`` (HTTP 400) naming the field at fault.
    public init(json: JSONValue) throws {
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
        try fields.rejectUnsupported(["logprobs": .zeroOrFalse, "tools": .emptyArray, "functions": .emptyArray])
        settings = try fields.generationSettings(maxTokenKeys: ["max_tokens", "max_completion_tokens"])
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
        case boolFalse, zeroOrFalse, one, emptyString, emptyArray, zero

        func accepts(_ value: JSONValue) -> Bool {
            switch (self, value) {
            case (.boolFalse, .bool(false)): return true
            case (.zeroOrFalse, .bool(false)): return true
            case (.zeroOrFalse, _), (.zero, _): return value.doubleValue == 0
            case (.one, _): return value.doubleValue == 1
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

    /// Reads the sampling, length, stop and stream fields common to both routes.
    func generationSettings(maxTokenKeys: [String]) throws -> GenerationSettings {
        try rejectUnsupported(["n": .one, "frequency_penalty": .zero, "presence_penalty": .zero])
        if let value = value("logit_bias"), value != .object([]) {
            throw APIError.invalidRequest("'logit_bias' is not supported", param: "logit_bias")
        }

        var settings = GenerationSettings()
        var parameters = SamplingParameters()
        if let value = try number("temperature") { parameters.temperature = Float(value) }
        if let value = try number("top_p") { parameters.topP = Float(value) }
        if let value = try number("min_p") { parameters.minP = Float(value) }
        if let value = try number("repeat_penalty") { parameters.repeatPenalty = Float(value) }
        if let value = try integer("top_k") {
            guard let topK = Int(exactly: value) else {
                throw APIError.invalidRequest("'top_k' is out of range", param: "top_k")
            }
            parameters.topK = topK
        }
        if let value = try integer("repeat_last_n") {
            guard let lastN = Int(exactly: value) else {
                throw APIError.invalidRequest("'repeat_last_n' is out of range", param: "repeat_last_n")
            }
            parameters.repeatLastN = lastN
        }
        if let value = try integer("seed") {
            guard value >= -1 else {
                throw APIError.invalidRequest("'seed' must be >= 0, or -1 for a random seed; got \(value)", param: "seed")
            }
            parameters.seed = value == -1 ? nil : UInt64(value)
        }
        do {
            settings.parameters = try parameters.validated()
        } catch let SamplingError.invalid(parameter, reason) {
            let name = RequestFields.apiName(ofSamplingParameter: parameter)
            throw APIError.invalidRequest("'\(name)' \(reason)", param: name)
        }

        for key in maxTokenKeys {
            guard let value = try integer(key) else { continue }
            guard value >= 0, let maxTokens = Int(exactly: value) else {
                throw APIError.invalidRequest("'\(key)' must be >= 0, got \(value)", param: key)
            }
            settings.maxTokens = maxTokens
            break
        }

        switch value("stop") {
        case nil:
            break
        case let .string(text)?:
            settings.stop = [text]
        case let .array(elements)?:
            settings.stop = try elements.map { element in
                guard case let .string(text) = element else {
                    throw APIError.invalidRequest("'stop' must hold strings, not \(element.typeName)", param: "stop")
                }
                return text
            }
        case let other?:
            throw APIError.invalidRequest(
                "'stop' must be a string or an array of strings, not \(other.typeName)", param: "stop")
        }
        if settings.stop.count > GenerationSettings.maximumStopStrings {
            throw APIError.invalidRequest(
                "'stop' holds \(settings.stop.count) strings; at most \(GenerationSettings.maximumStopStrings) are allowed",
                param: "stop")
        }
        if settings.stop.contains("") {
            throw APIError.invalidRequest("'stop' strings must not be empty", param: "stop")
        }

        settings.stream = try bool("stream") ?? false
        return settings
    }

    /// The request field name of a ``SamplingParameters`` property.
    static func apiName(ofSamplingParameter name: String) -> String {
        switch name {
        case "topK": return "top_k"
        case "topP": return "top_p"
        case "minP": return "min_p"
        case "repeatPenalty": return "repeat_penalty"
        case "repeatLastN": return "repeat_last_n"
        default: return name
        }
    }
}
