import LlamaGrammar
import LlamaTokenizer
import Logging

/// The scheduler shared by the cluster coordinator and the one-process server: it admits
/// requests into KV-cache slots (reusing cached prompt prefixes), packs the next tokens of
/// every running sequence into frames under a token budget, keeps to the frames-in-flight
/// limit, and turns the logits that come back into tokens, text and events.
///
/// It owns no threads, sockets or model weights. The owner (``ServingFrontend``'s loop) asks
/// for ``nextBatch(now:)``, computes it however it runs the layers, and hands the logits
/// rows back to ``complete(_:logits:now:)``. When the owner's pipeline loses state (a worker
/// died, a frame timed out) it calls ``restartPipeline(reason:)``: every running sequence is
/// then replayed from its history, which never advances a sampler.
///
/// Not thread-safe: one thread drives it.
public final class ServingCore {
    public struct Settings: Sendable {
        public var slotCount: Int
        /// Most tokens in one frame.
        public var batchTokens: Int
        /// Most frames in the pipeline at once.
        public var maxInFlight: Int
        public var contextLength: Int
        public var speculative: SpeculativeSettings?

        public init(slotCount: Int, batchTokens: Int, maxInFlight: Int, contextLength: Int,
                    speculative: SpeculativeSettings? = nil) {
            self.slotCount = slotCount
            self.batchTokens = batchTokens
            self.maxInFlight = maxInFlight
            self.contextLength = contextLength
            self.speculative = speculative
        }
    }

    /// A sequence's part of a frame in flight.
    struct Span {
        let sequence: SequenceRecord
        let first: Int
        let count: Int
        /// Positions (in order) whose logits rows come back.
        let rowPositions: [Int]
        let isDecode: Bool
        /// Tokens of this span sent again after a loss.
        let replayed: Int
    }

    struct InFlight {
        let spans: [Span]
        let deadline: Double
        let tokens: Int
    }

    public let settings: Settings
    public let tokenizer: LlamaTokenizer
    let metrics: ServingMetrics
    let logger: Logger
    let table: SequenceTable
    let logprobs: LogprobCalculator
    private var grammarVocabularyStorage: GrammarVocabulary?
    private var inFlight: [UInt64: InFlight] = [:]
    var pendingCopies: [CacheCopy] = []
    private var nextBatchID: UInt64 = 0
    private var roundRobin = 0
    /// The replay under way since the pipeline restarted: when its first frame went out, and
    /// the tokens and sequences it rebuilds.
    private var replay: (startedAt: Double, tokens: Int, sequences: Int)?
    /// While paused no frame is sent (a worker is missing); requests still queue.
    public var paused = false
    /// A frame is overdue after `frameTimeoutBase + frameTimeoutPerToken * tokens` seconds
    /// (the owner updates these from the stages' measured speeds; infinite by default).
    public var frameTimeoutBase = Double.infinity
    public var frameTimeoutPerToken = 0.0

    /// Drafts tokens with a small model when speculation is on (nil: prompt lookup only).
    let drafter: ModelDrafter?

    public init(settings: Settings, tokenizer: LlamaTokenizer, metrics: ServingMetrics, logger: Logger,
                drafter: ModelDrafter? = nil) {
        self.settings = settings
        self.drafter = drafter
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.logger = logger
        table = SequenceTable(slotCount: settings.slotCount)
        logprobs = LogprobCalculator(vocabularySize: tokenizer.vocabularySize)
    }

    /// The vocabulary prepared for grammar masks, built on first use.
    var grammarVocabulary: GrammarVocabulary {
        if let v = grammarVocabularyStorage { return v }
        let t = tokenizer
        let v = GrammarVocabulary(pieces: (0..<Int32(t.vocabularySize)).map { t.piece($0) }, endOfText: t.eosID,
                                  isControl: { t.isControl($0) })
        grammarVocabularyStorage = v
        return v
    }

    // MARK: - Intake

    /// Queues a checked job (``JobLimits/validate(_:)``) whose events go to `sink`.
    func submit(id: Int, job: CompletionJob, seed: UInt64, sink: AsyncThrowingStream<CompletionEvent, Error>.Continuation,
                now: Double) throws {
        let request = RequestRecord(id: id, job: job, seed: seed, submittedAt: now, sink: sink)
        let vocabulary = job.grammar == nil ? nil : grammarVocabulary
        for choice in 0..<job.choices {
            let state = try GenerationState(choice: choice, job: job, seed: seed &+ UInt64(choice), tokenizer: tokenizer,
                                            logprobs: logprobs, grammarVocabulary: vocabulary,
                                            contextLength: settings.contextLength, history: job.promptTokens)
            request.choices.append(SequenceRecord(request: request, choice: choice, generation: state))
        }
        metrics.requestReceived(promptTokens: job.promptTokens.count)
        if request.wantsPromptLogprobs && request.promptCount == 1 {
            // Nothing predicts the first token: its log-probability is null.
            let first = job.promptTokens[0]
            sink.yield(.prompt([TokenLogprob(token: first, bytes: tokenizer.piece(first), logprob: nil)]))
            request.promptReported = 1
        }
        if job.maxTokens == 0 && !request.wantsPromptLogprobs {
            for s in request.choices { sink.yield(.finished(choice: s.choice, .length, completionTokens: 0)) }
            sink.finish()
            metrics.requestEnded(request, now: now, failed: false)
            return
        }
        table.enqueue(request)
    }

    /// Ends a request whose client went away; its slots are free at once.
    public func cancel(requestID: Int) {
        guard let r = table.request(requestID) else { return }
        table.remove(r)
        r.sink.finish()
    }

    /// Ends every request (running, and queued unless `keepQueued`) with `error`.
    public func failAll(_ error: Error, keepQueued: Bool = false, now: Double) {
        for r in table.allRequests where !(keepQueued && r.admittedAt == nil) { fail(r, error, now: now) }
    }

    /// Ends the queued requests with `error`.
    public func failQueued(_ error: Error, now: Double) {
        for r in table.allRequests where r.admittedAt == nil { fail(r, error, now: now) }
    }

    func fail(_ r: RequestRecord, _ error: Error, now: Double) {
        table.remove(r)
        r.sink.finish(throwing: error)
        metrics.requestEnded(r, now: now, failed: true)
    }

    public var queueLength: Int { table.queue.count }
    public var activeRequests: Int { table.activeRequestCount }
    /// The ids of the requests holding slots, for the log (`#12, #13`).
    public var activeRequestList: String {
        Set(table.running.map(\.request.id)).sorted().map { "#\($0)" }.joined(separator: ", ")
    }
    public var framesInFlight: Int { inFlight.count }
    /// Requests queued or running.
    public var hasRequests: Bool { table.activeRequestCount + table.queue.count > 0 }

    // MARK: - Frames

    /// The next frame to send, or nil (nothing to send, paused, or the pipeline is full).
    public func nextBatch(now: Double) -> TokenBatch? {
        guard !paused, inFlight.count < settings.maxInFlight else { return nil }
        for (request, reused) in table.admit(now: now) {
            metrics.requestAdmitted(request, reusedPromptTokens: reused, now: now)
        }
        let ready = table.running.filter(\.canSend)
        guard !ready.isEmpty else { return nil }
        var batch = TokenBatch(id: nextBatchID)
        nextBatchID &+= 1
        var spans: [Span] = []
        var budget = settings.batchTokens
        let start = roundRobin % ready.count
        roundRobin &+= 1
        for k in 0..<ready.count where budget > 0 {
            let s = ready[(start + k) % ready.count]
            spans.append(s.isDecoding ? addDecode(s, to: &batch, budget: &budget) : addPrefill(s, to: &batch, budget: &budget))
        }
        batch.copies = pendingCopies
        pendingCopies.removeAll()
        let timeout = frameTimeoutBase + frameTimeoutPerToken * Double(batch.tokenCount)
        inFlight[batch.id] = InFlight(spans: spans, deadline: now + timeout, tokens: batch.tokenCount)
        let replayed = spans.reduce(0) { $0 + $1.replayed }
        metrics.frameSent(tokens: batch.tokenCount, replayed: replayed)
        if replayed > 0, replay == nil {
            let pending = table.running.filter { $0.replayUntil > $0.computed }
            replay = (now, pending.reduce(0) { $0 + $1.replayUntil - $1.computed }, pending.count)
        }
        return batch
    }

    /// The last sampled token, and drafts after it when speculation is on.
    private func addDecode(_ s: SequenceRecord, to batch: inout TokenBatch, budget: inout Int) -> Span {
        let n = s.tokens.count
        var draft: [Int32] = []
        if s.draftPause > 0 {
            s.draftPause -= 1
        } else if let spec = settings.speculative, s.request.job.speculative, budget > 1 {
            let remaining = (s.request.job.maxTokens ?? settings.contextLength) - s.generation.generated
            let room = min(budget - 1, settings.contextLength - n, remaining - 1, s.draftLimit ?? spec.maxDraft)
            // Prompt lookup first (free); the draft model when the sequence's history has no match.
            draft = spec.draft(s.tokens, limit: room)
            if draft.isEmpty, let drafter { draft = drafter.draft(slot: s.slot, tokens: s.tokens, limit: min(room, spec.maxDraft)) }
        }
        append(s, token: s.tokens[n - 1], position: n - 1, logits: true, to: &batch)
        for (j, t) in draft.enumerated() { append(s, token: t, position: n + j, logits: true, to: &batch) }
        s.sent = n
        s.draft = draft
        s.awaitingLogits = true
        budget -= 1 + draft.count
        return Span(sequence: s, first: n - 1, count: 1 + draft.count, rowPositions: Array((n - 1)..<(n + draft.count)),
                    isDecode: true, replayed: 0)
    }

    /// The next chunk of a prompt (or of a history being replayed).
    private func addPrefill(_ s: SequenceRecord, to batch: inout TokenBatch, budget: inout Int) -> Span {
        let r = s.request
        let take = min(budget, s.tokens.count - s.sent)
        let first = s.sent
        var rows: [Int] = []
        let samples = s.generation.finishReason == nil && r.job.maxTokens != 0
        for i in first..<(first + take) {
            let last = i == s.tokens.count - 1
            // Row i predicts token i + 1: echo wants it for every prompt token not yet reported.
            let echoRow = r.wantsPromptLogprobs && i + 1 < r.promptCount && i + 1 >= r.promptReported
            let wanted = (last && samples) || echoRow
            append(s, token: s.tokens[i], position: i, logits: wanted, to: &batch)
            if wanted { rows.append(i) }
        }
        s.sent += take
        budget -= take
        if !rows.isEmpty || (s.sent == s.tokens.count && !samples) { s.awaitingLogits = true }
        let replayed = max(0, min(first + take, s.replayUntil) - first)
        return Span(sequence: s, first: first, count: take, rowPositions: rows, isDecode: false, replayed: replayed)
    }

    private func append(_ s: SequenceRecord, token: Int32, position: Int, logits: Bool, to batch: inout TokenBatch) {
        batch.tokens.append(token)
        batch.sequenceIDs.append(s.slot)
        batch.positions.append(Int32(position))
        batch.needLogits.append(logits)
    }

    /// The pipeline lost its state: frames in flight will never count, every stage's cache
    /// is empty, and every running sequence is sent again from its first token.
    public func restartPipeline(reason: String) {
        inFlight.removeAll()
        pendingCopies.removeAll()
        replay = nil
        for s in table.running { s.replayUntil = max(s.replayUntil, s.computed) }
        table.forgetCaches()
        if !table.running.isEmpty {
            logger.info("replaying \(table.running.count) sequences (\(table.running.reduce(0) { $0 + $1.tokens.count }) tokens): \(reason)")
        }
    }

    /// Whether a frame in flight has taken longer than its timeout.
    public func hasOverdueFrame(now: Double) -> Bool {
        inFlight.values.contains { $0.deadline < now }
    }

    /// Whether `id` is a frame this core is waiting for.
    public func isInFlight(_ id: UInt64) -> Bool { inFlight[id] != nil }

    /// How many logits rows frame `id` in flight expects back (nil: not in flight).
    public func logitsRowCount(ofFrame id: UInt64) -> Int? {
        inFlight[id].map { $0.spans.reduce(0) { $0 + $1.rowPositions.count } }
    }

    // MARK: - Results

    /// Takes the logits rows of frame `id` (`rows * vocabularySize` floats, in row order).
    /// Unknown ids (frames of an earlier pipeline, duplicates) are ignored.
    public func complete(_ id: UInt64, logits: UnsafeBufferPointer<Float>, now: Double) {
        guard let frame = inFlight.removeValue(forKey: id) else { return }
        let vocab = tokenizer.vocabularySize
        var row = 0
        for span in frame.spans {
            let s = span.sequence
            defer { row += span.rowPositions.count }
            guard !s.done else { continue }
            let rows = UnsafeBufferPointer(rebasing: logits[(row * vocab)..<((row + span.rowPositions.count) * vocab)])
            if span.isDecode {
                verify(s, rows: rows, now: now)
            } else {
                finishPrefill(s, span: span, rows: rows, now: now)
            }
        }
        if let r = replay, table.running.allSatisfy({ $0.done || $0.computed >= $0.replayUntil }) {
            replay = nil
            let seconds = now - r.startedAt
            metrics.replayFinished(seconds: seconds)
            logger.info("replay done: \(r.tokens) tokens of \(r.sequences) sequences rebuilt in \(String(format: "%.3f", seconds)) s (\(String(format: "%.0f", Double(r.tokens) / max(seconds, 1e-6))) tokens/s)")
        }
    }
}
