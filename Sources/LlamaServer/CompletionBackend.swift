import LlamaSampling

/// One generation job as the endpoint hands it to whatever runs the model.
public struct CompletionJob: Sendable {
    /// Prompt token ids, BOS included.
    public var promptTokens: [Int32]
    public var parameters: SamplingParameters
    public var maxTokens: Int

    public init(promptTokens: [Int32], parameters: SamplingParameters, maxTokens: Int) {
        self.promptTokens = promptTokens
        self.parameters = parameters
        self.maxTokens = maxTokens
    }
}

/// Why a generation ended.
public enum FinishReason: String, Sendable, Codable {
    /// The model produced end-of-text.
    case stop
    /// `maxTokens` were generated or the context is full.
    case length
}

/// What a running job reports, in order: any number of `.token`, then one `.finished`.
public enum CompletionEvent: Sendable, Equatable {
    /// A generated token and the text it completes (may be empty while a UTF-8 character is incomplete).
    case token(id: Int32, text: String)
    case finished(FinishReason, promptTokens: Int, completionTokens: Int)
}

/// The state of one worker for `/health`, `/metrics` and `llama-coord status`.
public struct WorkerStatus: Sendable, Codable, Equatable {
    public var name: String
    /// "waiting" (not joined), "loading", "ready", "missing" (stopped answering).
    public var state: String
    public var layers: String?
    public var threads: Int?
    public var address: String?
    public var tokensProcessed: Int
    /// Tokens per second this worker processed over its recent busy time.
    public var tokensPerSecond: Double
    public var secondsSinceHeartbeat: Double?

    public init(name: String, state: String, layers: String? = nil, threads: Int? = nil, address: String? = nil,
                tokensProcessed: Int = 0, tokensPerSecond: Double = 0, secondsSinceHeartbeat: Double? = nil) {
        self.name = name
        self.state = state
        self.layers = layers
        self.threads = threads
        self.address = address
        self.tokensProcessed = tokensProcessed
        self.tokensPerSecond = tokensPerSecond
        self.secondsSinceHeartbeat = secondsSinceHeartbeat
    }
}

/// Counters for `/metrics`.
public struct BackendMetrics: Sendable, Equatable {
    public var requestsTotal = 0
    public var requestsFailed = 0
    public var requestsActive = 0
    public var queueLength = 0
    public var promptTokensTotal = 0
    public var generatedTokensTotal = 0
    /// Generated tokens per second over the last few seconds.
    public var tokensPerSecond = 0.0

    public init() {}
}

/// What the HTTP endpoint needs from the model runner (the cluster coordinator, or one process).
public protocol CompletionBackend: Sendable {
    /// Model name shown by `/v1/models`.
    var modelName: String { get }
    /// Positions a sequence holds (prompt plus completion).
    var contextLength: Int { get }
    var bosID: Int32 { get }
    var eosID: Int32 { get }
    /// Number of token ids (valid ids are `0 ..< vocabularySize`), or `nil` if unknown.
    /// `POST /detokenize` refuses ids outside the range, so `detokenize` never sees them.
    var vocabularySize: Int? { get }
    func tokenize(_ text: String, addBOS: Bool) -> [Int32]
    func detokenize(_ ids: [Int32]) -> String
    /// Starts a job; events arrive on the stream. Cancelling the stream's consumer (or
    /// terminating it) releases the job. Errors end the stream with a thrown error whose
    /// description is fit to show a user; the endpoint answers HTTP 503 with it, or, if the
    /// error is an ``APIError``, that error's status and body.
    func submit(_ job: CompletionJob) -> AsyncThrowingStream<CompletionEvent, Error>
    /// Whether every worker is ready, and each worker's state.
    func health() -> (ready: Bool, workers: [WorkerStatus])
    func metrics() -> BackendMetrics
}

extension CompletionBackend {
    /// Unknown unless the backend says: `/detokenize` then only refuses negative ids.
    public var vocabularySize: Int? { nil }
}
