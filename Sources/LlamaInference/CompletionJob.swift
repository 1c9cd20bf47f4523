import LlamaGrammar
import LlamaSampling

// MARK: - Jobs

/// One completion request as the HTTP endpoint hands it to whatever runs the model (the
/// cluster coordinator, or one process). Fields use the OpenAI / llama.cpp server names in
/// their documentation; ``CompletionBackend/submit(_:)`` checks every value once.
public struct CompletionJob: Sendable {
    /// Prompt token ids, BOS included.
    public var promptTokens: [Int32]
    /// Sampler settings (temperature, top-k/p, min-p, penalties, logit bias, seed).
    public var parameters: SamplingParameters
    /// Tokens to generate per choice; `nil` means until end-of-text or a full context. Values
    /// larger than the room left in the context are clamped to it.
    public var maxTokens: Int?
    /// Strings that end generation (the text is cut before the first one).
    public var stop: [String]
    /// Alternatives to report with each token's log-probability (0...20); `nil`: none.
    public var logprobs: Int?
    /// Report the prompt's tokens and their log-probabilities first (legacy completions `echo`).
    public var echo: Bool
    /// Choices to generate from the one prompt (`n`); choice `i` samples with `seed + i`.
    public var choices: Int
    /// A grammar every choice's text must follow (`grammar`, `response_format`).
    public var grammar: Grammar?
    /// Reuse the longest prefix of the prompt already in a free slot's cache (`cache_prompt`).
    public var cachePrompt: Bool
    /// Draft tokens (prompt lookup or a draft model) when the backend has speculative decoding (`speculative`).
    public var speculative: Bool

    public init(promptTokens: [Int32], parameters: SamplingParameters = SamplingParameters(), maxTokens: Int? = 16,
                stop: [String] = [], logprobs: Int? = nil, echo: Bool = false, choices: Int = 1,
                grammar: Grammar? = nil, cachePrompt: Bool = true, speculative: Bool = true) {
        self.promptTokens = promptTokens
        self.parameters = parameters
        self.maxTokens = maxTokens
        self.stop = stop
        self.logprobs = logprobs
        self.echo = echo
        self.choices = choices
        self.grammar = grammar
        self.cachePrompt = cachePrompt
        self.speculative = speculative
    }

    /// At most this many stop strings, as the OpenAI API allows.
    public static let maximumStopStrings = 4
    /// At most this many alternatives per token, as the OpenAI API allows.
    public static let maximumLogprobs = 20
}

// MARK: - Events

/// Why a choice ended.
public enum FinishReason: String, Sendable, Codable {
    /// The model produced end-of-text, a stop string appeared, or the grammar is complete.
    case stop
    /// The token limit was reached or the context is full.
    case length
}

/// One token of a completion (or of the prompt, with `echo`), with its log-probability when
/// the job asked for log-probabilities.
public struct TokenLogprob: Sendable, Equatable {
    /// An alternative: a token and its log-probability.
    public struct Alternative: Sendable, Equatable {
        public var token: Int32
        public var bytes: [UInt8]
        public var logprob: Float

        public init(token: Int32, bytes: [UInt8], logprob: Float) {
            self.token = token
            self.bytes = bytes
            self.logprob = logprob
        }
    }

    public var token: Int32
    /// The bytes the token adds to the text (need not be valid UTF-8 on their own).
    public var bytes: [UInt8]
    /// Natural log of the token's probability under the model's raw distribution (the
    /// log-softmax of its logits before any sampling transform); `nil` for the first prompt
    /// token, which nothing predicts.
    public var logprob: Float?
    /// The most likely tokens at this position, best first (`logprobs` of them).
    public var top: [Alternative]

    public init(token: Int32, bytes: [UInt8], logprob: Float?, top: [Alternative] = []) {
        self.token = token
        self.bytes = bytes
        self.logprob = logprob
        self.top = top
    }
}

/// What a running job reports, in order: with `echo` one `.prompt`, then for each choice any
/// number of `.text` and one `.finished`. The stream ends when every choice has finished.
public enum CompletionEvent: Sendable, Equatable {
    /// The prompt's tokens with their log-probabilities (jobs with `echo`).
    case prompt([TokenLogprob])
    /// Text released for choice `choice` (stop strings already cut out, never a partial UTF-8
    /// character) and the tokens whose text it completes (with log-probabilities if asked).
    case text(choice: Int, String, tokens: [TokenLogprob])
    /// Choice `choice` ended after generating `completionTokens` tokens.
    case finished(choice: Int, FinishReason, completionTokens: Int)
}

// MARK: - Errors

/// Why a backend refused or ended a job; the HTTP endpoint maps each to a status code.
public enum BackendError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A field of the job is out of range (HTTP 400); `param` is its API name.
    case invalidRequest(String, param: String?)
    /// The model cannot run now (HTTP 503): a worker is missing, the cluster is starting or
    /// draining, the queue is full. `retryAfter` seconds is a hint for the client.
    case unavailable(String, retryAfter: Int?)
    /// A fault in the model runner itself (HTTP 500).
    case internalError(String)

    public var description: String {
        switch self {
        case let .invalidRequest(message, _): return message
        case let .unavailable(message, _): return message
        case let .internalError(message): return message
        }
    }
}
