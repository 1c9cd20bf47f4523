import Foundation
import GGUF
import LlamaKernels
import LlamaModel
import LlamaTokenizer
import Logging
import Synchronization

/// The HTTP API's model runner in one process (`llama-coord serve`, llama-server's
/// single-host case): the same ``ServingCore`` the cluster coordinator schedules with, over
/// every layer of the model on this host. Requests from any thread; one serving thread.
public final class LocalBackend: CompletionBackend, @unchecked Sendable {
    // @unchecked: `engine`, `core` and the buffers are touched only by the serving thread
    // (`run`); everything other threads call goes through `frontend` (a Mutex) or the
    // immutable `tokenizer` and `info`. `condition` guards `woken` and `stopping`.
    public let info: ModelInfo
    public let tokenizer: LlamaTokenizer
    public let frontend: ServingFrontend
    private let engine: LlamaEngine
    private let core: ServingCore
    private let logger: Logger
    private let condition = NSCondition()
    private var woken = false
    private var stopping = false
    private let draining = Mutex(false)
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)
    private var logits: [Float] = []

    public struct Options: Sendable {
        public var threads: Int?
        public var slots: Int
        public var contextLength: Int?
        public var batch: Int
        public var kvCache: KVCacheType
        public var maxQueue: Int
        public var speculative: SpeculativeSettings?

        public init(threads: Int? = nil, slots: Int = 4, contextLength: Int? = nil, batch: Int = 512,
                    kvCache: KVCacheType = .f16, maxQueue: Int = 64, speculative: SpeculativeSettings? = nil) {
            self.threads = threads
            self.slots = slots
            self.contextLength = contextLength
            self.batch = batch
            self.kvCache = kvCache
            self.maxQueue = maxQueue
            self.speculative = speculative
        }
    }

    public init(modelPath: String, options: Options = Options(), metrics: ServingMetrics = ServingMetrics(),
                logger: Logger = Logger(label: "llamacluster.local")) throws {
        let file = try GGUFFile(path: modelPath)
        tokenizer = try loadTokenizer(file)
        let config = try LlamaConfig(gguf: file)
        let context = min(options.contextLength ?? config.contextLength, config.contextLength)
        engine = try LlamaEngine(path: modelPath, threads: options.threads, maxSequences: options.slots,
                                 contextLength: context, maxBatch: options.batch, kvCache: options.kvCache)
        info = ModelInfo(name: modelName(file, path: modelPath), path: modelPath, contextLength: context,
                         bosID: tokenizer.bosID, eosID: tokenizer.eosID, vocabularySize: config.vocabSize,
                         slotCount: options.slots, chatTemplate: file.metadata["tokenizer.chat_template"]?.string)
        self.logger = logger
        core = ServingCore(settings: .init(slotCount: options.slots, batchTokens: options.batch, maxInFlight: 1,
                                           contextLength: context, speculative: options.speculative),
                           tokenizer: tokenizer, metrics: metrics, logger: logger,
                           drafter: try options.speculative?.makeDrafter(target: tokenizer.vocabulary, slots: options.slots,
                                                                         contextLength: context))
        let condition = self.condition
        let box = WakeFlag()
        frontend = ServingFrontend(limits: JobLimits(contextLength: context, vocabularySize: config.vocabSize,
                                                     slotCount: options.slots),
                                   maxQueue: options.maxQueue) {
            condition.lock()
            box.set()
            condition.signal()
            condition.unlock()
        }
        wakeFlag = box
        var snapshot = ServingFrontend.Snapshot()
        snapshot.health = HealthReport(ready: true)
        snapshot.admission = .open
        snapshot.stageSummary = "local 0-\(config.layerCount - 1)"
        // Every slot, idle, from the start (the serving thread publishes after its first turn).
        snapshot.slots = core.slotStatuses()
        frontend.publish(snapshot)
    }

    private let wakeFlag: WakeFlag

    /// Starts the serving thread.
    public func start() {
        let t = Thread { [self] in
            run()
            stopped.signal()
        }
        t.name = "serving"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    /// Refuses new requests (HTTP 503 with Retry-After) and waits up to `timeout` seconds for
    /// the running ones to finish. Returns whether they all did.
    public func drain(timeout: Double) async -> Bool {
        draining.withLock { $0 = true }
        let deadline = Date().addingTimeInterval(timeout)
        try? await Task.sleep(nanoseconds: 100_000_000)
        while Date() < deadline {
            let c = frontend.snapshot.counters
            if c.requestsActive == 0 && c.queueLength == 0 { return true }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return false
    }

    /// Stops the serving thread; requests still running end with an error.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        if thread != nil { stopped.wait() }
        thread = nil
    }

    private func run() {
        var snapshot = frontend.snapshot
        while true {
            condition.lock()
            if stopping {
                condition.unlock()
                break
            }
            if !core.hasRequests && !wakeFlag.take() {
                _ = condition.wait(until: Date().addingTimeInterval(0.25))
            }
            _ = wakeFlag.take()
            condition.unlock()
            let now = monotonicNow()
            core.takeInbox(from: frontend, now: now)
            if let batch = core.nextBatch(now: now) { execute(batch) }
            snapshot.counters = core.countersNow(monotonicNow())
            snapshot.slots = core.slotStatuses()
            snapshot.queued = core.queueLength
            let isDraining = draining.withLock { $0 }
            snapshot.admission = isDraining ? .closed("the server is shutting down", retryAfter: 5) : .open
            snapshot.health.draining = isDraining
            frontend.publish(snapshot)
        }
        let error = BackendError.unavailable("the server is shutting down", retryAfter: 5)
        core.failAll(error, now: monotonicNow())
        frontend.failPending(error)
    }

    private func execute(_ batch: TokenBatch) {
        let vocab = engine.config.vocabSize
        let rows = batch.logitsRowCount
        if logits.count < max(rows, 1) * vocab { logits = [Float](repeating: 0, count: max(rows, 1) * vocab) }
        do {
            for c in batch.copies {
                try engine.slice.cache.copy(from: Int(c.source), to: Int(c.destination), count: Int(c.count))
            }
            try batch.tokens.withUnsafeBufferPointer { t in
                try batch.sequenceIDs.withUnsafeBufferPointer { s in
                    try batch.positions.withUnsafeBufferPointer { p in
                        try batch.needLogits.withUnsafeBufferPointer { n in
                            try logits.withUnsafeMutableBufferPointer {
                                try engine.forward(tokens: t, sequenceIDs: s, positions: p, needLogits: n, into: $0.baseAddress!)
                            }
                        }
                    }
                }
            }
        } catch {
            // The scheduler only builds valid batches; a failure here is a bug, not bad input.
            logger.error("a batch failed: \(error)")
            core.failAll(BackendError.internalError("the model failed on a batch: \(error)"), now: monotonicNow())
            return
        }
        logits.withUnsafeBufferPointer { core.complete(batch.id, logits: UnsafeBufferPointer(rebasing: $0[0..<(rows * vocab)]), now: monotonicNow()) }
    }

    // MARK: - CompletionBackend

    public func tokenize(_ text: String, addBOS: Bool) -> [Int32] { tokenizer.encode(text, addBOS: addBOS) }
    public func detokenize(_ ids: [Int32]) -> String { tokenizer.decode(ids) }
    public func piece(_ id: Int32) -> [UInt8] { tokenizer.piece(id) }
    public func specialTokenID(_ text: String) -> Int32? { tokenizer.specialTokenID(text) }
    public func submit(_ job: CompletionJob) throws -> AsyncThrowingStream<CompletionEvent, Error> { try frontend.submit(job) }
    public func health() -> HealthReport { frontend.snapshot.health }
    public func counters() -> BackendCounters { frontend.snapshot.counters }
    public func slots() -> [SlotStatus] { frontend.snapshot.slots }
    public var stageSummary: String { "local 0-\(engine.config.layerCount - 1)" }
}

/// A flag set by any thread and taken by the serving thread.
final class WakeFlag: @unchecked Sendable {
    // @unchecked: `value` is only read and written with the owner's NSCondition held.
    private var value = false
    func set() { value = true }
    func take() -> Bool {
        defer { value = false }
        return value
    }
}

/// The tokenizer of a model file; its vocabulary must be the model's.
public func loadTokenizer(_ file: GGUFFile) throws -> LlamaTokenizer {
    let tokenizer = LlamaTokenizer(vocabulary: try Vocabulary(gguf: file))
    let config = try LlamaConfig(gguf: file)
    guard tokenizer.vocabularySize == config.vocabSize else {
        throw ModelError.invalidConfig(key: "tokenizer.ggml.tokens",
                                       reason: "\(tokenizer.vocabularySize) tokens but the model has a vocabulary of \(config.vocabSize)")
    }
    return tokenizer
}

/// The name `/v1/models` shows: `general.name`, or the file name.
public func modelName(_ file: GGUFFile, path: String) -> String {
    file.metadata["general.name"]?.string ?? (path as NSString).lastPathComponent
}
