/// What the model being served is, for `/v1/models`, `/props` and the chat template.
public struct ModelInfo: Sendable, Equatable {
    /// Name shown by `/v1/models` (the GGUF's `general.name`, or the file name).
    public var name: String
    /// Path of the GGUF file on the serving host.
    public var path: String
    /// Positions a sequence holds (prompt plus completion).
    public var contextLength: Int
    public var bosID: Int32
    public var eosID: Int32
    /// Number of token ids (valid ids are `0 ..< vocabularySize`).
    public var vocabularySize: Int
    /// Sequences generated at once (KV-cache slots on every stage).
    public var slotCount: Int
    /// The GGUF's `tokenizer.chat_template`, if it has one.
    public var chatTemplate: String?

    public init(name: String, path: String, contextLength: Int, bosID: Int32, eosID: Int32, vocabularySize: Int,
                slotCount: Int, chatTemplate: String? = nil) {
        self.name = name
        self.path = path
        self.contextLength = contextLength
        self.bosID = bosID
        self.eosID = eosID
        self.vocabularySize = vocabularySize
        self.slotCount = slotCount
        self.chatTemplate = chatTemplate
    }
}

/// The state of one worker (or standby) for `/health`, `/status` and `llama-coord status`.
public struct WorkerStatus: Sendable, Codable, Equatable {
    public var name: String
    /// "waiting" (not joined), "loading", "ready", "missing" (stopped answering), "standby",
    /// "leaving", or "failed: ..." (it reported an error loading its layers).
    public var state: String
    /// Layers it runs, "0-39"; nil for a standby.
    public var layers: String?
    public var threads: Int?
    public var address: String?
    public var tokensProcessed: Int
    /// Tokens per second this worker processed over its recent busy time.
    public var tokensPerSecond: Double
    public var secondsSinceHeartbeat: Double?
    /// Whether the manifest lists it as a standby (it takes over a missing worker's layers).
    public var standby: Bool

    public init(name: String, state: String, layers: String? = nil, threads: Int? = nil, address: String? = nil,
                tokensProcessed: Int = 0, tokensPerSecond: Double = 0, secondsSinceHeartbeat: Double? = nil,
                standby: Bool = false) {
        self.name = name
        self.state = state
        self.layers = layers
        self.threads = threads
        self.address = address
        self.tokensProcessed = tokensProcessed
        self.tokensPerSecond = tokensPerSecond
        self.secondsSinceHeartbeat = secondsSinceHeartbeat
        self.standby = standby
    }
}

/// Whether the backend can serve, and why not.
public struct HealthReport: Sendable, Equatable {
    /// Every layer is covered by a ready worker (always true in one process).
    public var ready: Bool
    /// The workers and standbys in manifest order (empty in one process).
    public var workers: [WorkerStatus]
    /// Names of workers whose layers nobody serves now.
    public var missing: [String]
    /// Draining after SIGTERM: running requests finish, new ones are refused.
    public var draining: Bool
    /// Running without authentication on a non-loopback address (`insecure: true`).
    public var insecure: Bool

    public init(ready: Bool, workers: [WorkerStatus] = [], missing: [String] = [], draining: Bool = false,
                insecure: Bool = false) {
        self.ready = ready
        self.workers = workers
        self.missing = missing
        self.draining = draining
        self.insecure = insecure
    }
}

/// Counters for `/status` (the same events `/metrics` exports through swift-metrics).
public struct BackendCounters: Sendable, Equatable {
    public var requestsTotal = 0
    public var requestsFailed = 0
    public var requestsActive = 0
    public var queueLength = 0
    public var promptTokensTotal = 0
    /// Prompt tokens whose KV entries were reused from a slot's cache instead of computed.
    public var promptTokensCached = 0
    public var generatedTokensTotal = 0
    /// Generated tokens per second over the last few seconds.
    public var tokensPerSecond = 0.0
    /// Times a lost worker's layers were taken over and the running sequences replayed.
    public var recoveries = 0
    /// Tokens computed again to rebuild KV caches after a loss.
    public var replayedTokens = 0
    /// Tokens drafted by prompt lookup, and those the model accepted.
    public var draftedTokens = 0
    public var acceptedDraftTokens = 0

    public init() {}
}

/// One KV-cache slot, for `GET /slots`.
public struct SlotStatus: Sendable, Equatable {
    public var id: Int
    public var contextLength: Int
    public var isProcessing: Bool
    /// Tokens whose keys and values the slot holds (reusable by the prompt cache when idle).
    public var cachedTokens: Int
    /// The request being served, if any.
    public var requestID: Int?

    public init(id: Int, contextLength: Int, isProcessing: Bool, cachedTokens: Int, requestID: Int? = nil) {
        self.id = id
        self.contextLength = contextLength
        self.isProcessing = isProcessing
        self.cachedTokens = cachedTokens
        self.requestID = requestID
    }
}

/// What the HTTP endpoint needs from the model runner: the cluster coordinator, or one
/// process (`llama-coord serve`). Both are built on ``ServingFrontend``.
public protocol CompletionBackend: Sendable {
    var info: ModelInfo { get }
    func tokenize(_ text: String, addBOS: Bool) -> [Int32]
    func detokenize(_ ids: [Int32]) -> String
    /// The bytes token `id` adds to a text. Precondition: `0 <= id < info.vocabularySize`.
    func piece(_ id: Int32) -> [UInt8]
    /// The id of a control token by its text (for chat templates), if the vocabulary has it.
    func specialTokenID(_ text: String) -> Int32?
    /// Checks the job (every range, once) and starts it; events arrive on the stream.
    /// Dropping or cancelling the stream's consumer cancels the job and frees its slots.
    /// - Throws: ``BackendError`` at once when the job is invalid or cannot run now; later
    ///   failures end the stream with a ``BackendError``.
    func submit(_ job: CompletionJob) throws -> AsyncThrowingStream<CompletionEvent, Error>
    func health() -> HealthReport
    func counters() -> BackendCounters
    func slots() -> [SlotStatus]
    /// Layers each stage runs and where ("w1 0-2, w2 3-5"), for `/slots` and `/props`.
    var stageSummary: String { get }
}
