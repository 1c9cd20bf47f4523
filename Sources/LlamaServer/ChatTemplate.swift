/// Who wrote a chat message.
public enum ChatRole: String, Sendable, Equatable {
    case system
    case user
    case assistant
}

/// One message of a chat conversation.
public struct ChatMessage: Sendable, Equatable {
    public var role: ChatRole
    public var content: String

    public init(role: ChatRole, content: String) {
        self.role = role
        self.content = content
    }
}

/// The Llama 2 chat prompt format, as the chat models were fine-tuned on it:
///
///     <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
///
/// An optional system message comes first and is folded into the first user turn. Then
/// user and assistant turns alternate, and the conversation ends with a user turn. Each
/// message's content is trimmed of surrounding whitespace.
///
/// `<s>` and `</s>` are the BOS and EOS control tokens: each turn's text is tokenized on
/// its own (without BOS) and the control token ids are put between the turns, so a
/// literal "<s>" typed by a user stays plain text.
///
/// llama.cpp's built-in "llama2" templates write the same turns but with no space after
/// `[/INST]` and before `</s>`; this follows the reference format of the model's authors.
public enum Llama2ChatTemplate {
    static let beginInstruction = "[INST]"
    static let endInstruction = "[/INST]"
    static let beginSystem = "<<SYS>>\n"
    static let endSystem = "\n<</SYS>>\n\n"

    /// The text of each turn, in order: full turns (`[INST] {user} [/INST] {assistant} `, to be
    /// wrapped in BOS ... EOS) followed by the open last turn (`[INST] {user} [/INST]`, BOS before it).
    /// - Throws: ``APIError`` (HTTP 400, param `messages`) if the roles do not follow the format.
    public static func turnTexts(_ messages: [ChatMessage]) throws -> [String] {
        var dialog = messages
        guard !dialog.isEmpty else {
            throw APIError.invalidRequest("'messages' must hold at least one message", param: "messages")
        }
        var systemPrefix = ""
        if dialog[0].role == .system {
            systemPrefix = beginSystem + dialog[0].content + endSystem
            dialog.removeFirst()
            guard !dialog.isEmpty else {
                throw APIError.invalidRequest(
                    "a system message must be followed by a user message", param: "messages")
            }
        }
        let offset = messages.count - dialog.count
        for (index, message) in dialog.enumerated() {
            let expected: ChatRole = index % 2 == 0 ? .user : .assistant
            if message.role != expected {
                throw APIError.invalidRequest(
                    "messages[\(index + offset)] has role '\(message.role.rawValue)' where '\(expected.rawValue)' "
                        + "was expected: the Llama 2 chat format takes an optional first system message, then "
                        + "user and assistant messages in turn, ending with a user message",
                    param: "messages")
            }
        }
        guard dialog.count % 2 == 1 else {
            throw APIError.invalidRequest(
                "the last message must have role 'user' (the Llama 2 chat format answers a user message)",
                param: "messages")
        }
        dialog[0].content = systemPrefix + dialog[0].content

        var texts: [String] = []
        var index = 0
        while index + 1 < dialog.count {
            let user = trimmed(dialog[index].content)
            let assistant = trimmed(dialog[index + 1].content)
            texts.append("\(beginInstruction) \(user) \(endInstruction) \(assistant) ")
            index += 2
        }
        texts.append("\(beginInstruction) \(trimmed(dialog[index].content)) \(endInstruction)")
        return texts
    }

    /// Token ids of the prompt: `BOS turn EOS` for each finished turn, then `BOS lastTurn`.
    /// - Parameters:
    ///   - tokenize: tokenizes one turn's text without adding BOS.
    /// - Throws: ``APIError`` (HTTP 400) if the roles do not follow the format.
    public static func promptTokens(
        _ messages: [ChatMessage], bos: Int32, eos: Int32, tokenize: (String) -> [Int32]
    ) throws -> [Int32] {
        let texts = try turnTexts(messages)
        var tokens: [Int32] = []
        for (index, text) in texts.enumerated() {
            tokens.append(bos)
            tokens.append(contentsOf: tokenize(text))
            if index < texts.count - 1 { tokens.append(eos) }
        }
        return tokens
    }

    /// The prompt as one string with `<s>` and `</s>` written out, for logs and documentation.
    public static func render(_ messages: [ChatMessage]) throws -> String {
        let texts = try turnTexts(messages)
        var output = ""
        for (index, text) in texts.enumerated() {
            output += "<s>" + text
            if index < texts.count - 1 { output += "</s>" }
        }
        return output
    }

    static func trimmed(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first ... last])
    }
}

// MARK: - Templates by name

/// The chat formats the endpoint knows, picked from the GGUF's `tokenizer.chat_template`
/// (a Jinja template; the format is recognised by its markers, the template is not run).
public enum ChatTemplate: String, Sendable, CaseIterable {
    /// Meta's Llama 2 chat format (the default).
    case llama2
    /// Meta's Llama 3: `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`.
    case llama3
    /// ChatML: `<|im_start|>role\n...<|im_end|>\n`.
    case chatml
    /// Mistral's instruct format: `[INST] ... [/INST]` without a system block.
    case mistral

    /// The format of a GGUF's `tokenizer.chat_template`, and whether it was recognised.
    public static func detect(_ template: String?) -> (template: ChatTemplate, recognised: Bool) {
        guard let t = template else { return (.llama2, false) }
        if t.contains("<|start_header_id|>") { return (.llama3, true) }
        if t.contains("<|im_start|>") { return (.chatml, true) }
        if t.contains("[INST]") { return (t.contains("<<SYS>>") ? .llama2 : .mistral, true) }
        return (.llama2, false)
    }

    /// Token ids of the prompt. `special` finds a control token's id by its text (nil: the
    /// text is tokenized as text).
    public func promptTokens(_ messages: [ChatMessage], bos: Int32, eos: Int32, special: (String) -> Int32? = { _ in nil },
                             tokenize: (String) -> [Int32]) throws -> [Int32] {
        switch self {
        case .llama2:
            return try Llama2ChatTemplate.promptTokens(messages, bos: bos, eos: eos, tokenize: tokenize)
        case .mistral:
            // System text joins the first user message; otherwise Llama 2's turns without <<SYS>>.
            var merged = messages
            if merged.first?.role == .system, merged.count > 1 {
                merged[1].content = merged[0].content + "\n\n" + merged[1].content
                merged.removeFirst()
            }
            return try Llama2ChatTemplate.promptTokens(merged, bos: bos, eos: eos, tokenize: tokenize)
        case .llama3, .chatml:
            guard messages.last?.role == .user else {
                throw APIError.invalidRequest("the last message must have role 'user'", param: "messages")
            }
            var tokens: [Int32] = [bos]
            func mark(_ text: String) {
                if let id = special(text) { tokens.append(id) } else { tokens += tokenize(text) }
            }
            for m in messages {
                if self == .llama3 {
                    mark("<|start_header_id|>")
                    tokens += tokenize(m.role.rawValue)
                    mark("<|end_header_id|>")
                    tokens += tokenize("\n\n" + Llama2ChatTemplate.trimmed(m.content))
                    mark("<|eot_id|>")
                } else {
                    mark("<|im_start|>")
                    tokens += tokenize(m.role.rawValue + "\n" + m.content)
                    mark("<|im_end|>")
                    tokens += tokenize("\n")
                }
            }
            if self == .llama3 {
                mark("<|start_header_id|>")
                tokens += tokenize("assistant")
                mark("<|end_header_id|>")
                tokens += tokenize("\n\n")
            } else {
                mark("<|im_start|>")
                tokens += tokenize("assistant\n")
            }
            return tokens
        }
    }
}
