import DequeModule
import LlamaSampling

// MARK: - Records

/// A request in the scheduler: its checked job, its choices and where its events go. Only the
/// serving thread touches it after submission.
final class RequestRecord {
    let id: Int
    let job: CompletionJob
    let sink: AsyncThrowingStream<CompletionEvent, Error>.Continuation
    /// The seed of choice 0 (choice i uses seed + i).
    let seed: UInt64
    let submittedAt: Double
    var admittedAt: Double?
    var firstTokenAt: Double?
    var lastTokenAt: Double?
    var choices: [SequenceRecord] = []
    /// Prompt tokens whose log-probabilities have been reported (echo), counting the first.
    var promptReported = 0
    var promptRows: [TokenLogprob] = []
    /// Ended: every choice finished, or it failed or was cancelled.
    var closed = false

    init(id: Int, job: CompletionJob, seed: UInt64, submittedAt: Double,
         sink: AsyncThrowingStream<CompletionEvent, Error>.Continuation) {
        self.id = id
        self.job = job
        self.seed = seed
        self.submittedAt = submittedAt
        self.sink = sink
    }

    /// Whether the prompt's positions must return logits rows (echo with log-probabilities).
    var wantsPromptLogprobs: Bool { job.echo && job.logprobs != nil }
    var promptCount: Int { job.promptTokens.count }
}

/// One choice of a request: a sequence of tokens in one KV-cache slot on every stage.
final class SequenceRecord {
    unowned let request: RequestRecord
    let choice: Int
    let generation: GenerationState
    var slot: Int32 = -1
    /// The whole history: prompt, then generated tokens. Replays resend it.
    var tokens: [Int32]
    /// `tokens[0..<sent]` have gone into frames of the current pipeline epoch.
    var sent = 0
    /// `tokens[0..<computed]` have keys and values on every stage (their frames came back).
    var computed = 0
    /// A frame carrying this sequence's logits rows is in the pipeline.
    var awaitingLogits = false
    /// Tokens drafted into that frame after the last real token (speculative decoding).
    var draft: [Int32] = []
    /// Adaptive speculation: the most tokens the next draft may have (nil: the settings'
    /// maximum), and decode steps left without drafting after drafts that were all rejected.
    var draftLimit: Int?
    var draftPause = 0
    /// Steps the next pause lasts after another wholly rejected draft (doubles, up to 16).
    var draftPauseLength = 1
    /// A later choice waiting for choice 0's prompt to be computed and copied to its slot.
    var waitingForFork: Bool
    /// Positions computed before the last loss: sending them again is a replay.
    var replayUntil = 0
    var done = false

    init(request: RequestRecord, choice: Int, generation: GenerationState) {
        self.request = request
        self.choice = choice
        self.generation = generation
        tokens = request.job.promptTokens
        waitingForFork = choice > 0
    }

    /// Has tokens to put into a frame now.
    var canSend: Bool { !done && !awaitingLogits && !waitingForFork && sent < tokens.count }
    /// Everything but the last sampled token is computed: the next frame is a decode step.
    var isDecoding: Bool { sent == tokens.count - 1 && computed == sent && tokens.count > request.promptCount }
}

// MARK: - Table

/// Requests waiting for slots, the sequences holding slots, and what each idle slot's KV
/// cache still holds (for the prompt cache).
final class SequenceTable {
    let slotCount: Int
    private(set) var queue = Deque<RequestRecord>()
    /// Sequences holding a slot, in admission order.
    private(set) var running: [SequenceRecord] = []
    private var freeSlots: [Int32]
    /// Per slot: tokens whose keys and values the slot holds at positions 0..<count. Kept
    /// when a sequence ends (an idle slot's cache is what the prompt cache reuses).
    private(set) var cached: [[Int32]]
    /// Requests by id, queued or running.
    private var requests: [Int: RequestRecord] = [:]

    init(slotCount: Int) {
        self.slotCount = slotCount
        freeSlots = (0..<Int32(slotCount)).reversed()
        cached = [[Int32]](repeating: [], count: slotCount)
    }

    var activeRequestCount: Int { requests.count - queue.count }
    var freeSlotCount: Int { freeSlots.count }
    func request(_ id: Int) -> RequestRecord? { requests[id] }
    var allRequests: [RequestRecord] { Array(requests.values).sorted { $0.id < $1.id } }

    func enqueue(_ request: RequestRecord) {
        requests[request.id] = request
        queue.append(request)
    }

    /// Gives the requests at the head of the queue their slots while enough are free; each
    /// admitted request's choice 0 takes the free slot whose cache shares the longest prefix
    /// with its prompt. Returns each admitted request with the prompt tokens reused.
    func admit(now: Double) -> [(request: RequestRecord, reused: Int)] {
        var admitted: [(RequestRecord, Int)] = []
        while let head = queue.first, head.choices.count <= freeSlots.count {
            queue.removeFirst()
            head.admittedAt = now
            let first = head.choices[0]
            var reused = 0
            if head.job.cachePrompt && !head.wantsPromptLogprobs {
                let (index, match) = longestCachedPrefix(head.job.promptTokens)
                first.slot = freeSlots.remove(at: index)
                // The last prompt token is always computed: its logits pick the first token.
                reused = min(match, head.promptCount - 1)
            } else {
                first.slot = takeLeastCachedSlot()
            }
            first.sent = reused
            first.computed = reused
            for child in head.choices.dropFirst() { child.slot = takeLeastCachedSlot() }
            for s in head.choices {
                cached[Int(s.slot)] = []
                running.append(s)
            }
            admitted.append((head, reused))
        }
        return admitted
    }

    /// Index in `freeSlots` of the slot sharing the longest prefix with `prompt`, and its length.
    private func longestCachedPrefix(_ prompt: [Int32]) -> (index: Int, length: Int) {
        var best = (index: freeSlots.count - 1, length: -1)
        for (i, slot) in freeSlots.enumerated() {
            let cache = cached[Int(slot)]
            var n = 0
            let limit = min(cache.count, prompt.count)
            while n < limit && cache[n] == prompt[n] { n += 1 }
            // Prefer the longest match; on ties the smaller cache (keep long ones for others).
            if n > best.length || (n == best.length && cache.count < cached[Int(freeSlots[best.index])].count) {
                best = (i, n)
            }
        }
        return (best.index, max(best.length, 0))
    }

    private func takeLeastCachedSlot() -> Int32 {
        var best = freeSlots.count - 1
        for i in freeSlots.indices where cached[Int(freeSlots[i])].count < cached[Int(freeSlots[best])].count { best = i }
        return freeSlots.remove(at: best)
    }

    /// Frees a finished sequence's slot; the slot keeps its computed tokens for later prompts.
    func release(_ s: SequenceRecord) {
        s.done = true
        guard s.slot >= 0 else { return }
        cached[Int(s.slot)] = Array(s.tokens[0..<min(s.computed, s.tokens.count)])
        freeSlots.append(s.slot)
        s.slot = -1
        running.removeAll { $0 === s }
    }

    /// Forgets a request (after its choices were released, or while it was queued).
    func remove(_ request: RequestRecord) {
        request.closed = true
        for s in request.choices where !s.done { release(s) }
        requests[request.id] = nil
        if let i = queue.firstIndex(where: { $0 === request }) { queue.remove(at: i) }
    }

    /// Every stage lost its caches (a new pipeline epoch): idle slots hold nothing, and
    /// running sequences must send their whole history again.
    func forgetCaches() {
        for i in cached.indices { cached[i] = [] }
        for s in running {
            s.sent = 0
            s.computed = 0
            s.awaitingLogits = false
            s.draft = []
        }
    }

    /// Token ids cached in each slot (for `/slots`).
    func cachedCount(slot: Int) -> Int {
        if let s = running.first(where: { Int($0.slot) == slot }) { return s.computed }
        return cached[slot].count
    }

    func occupant(slot: Int) -> SequenceRecord? { running.first { Int($0.slot) == slot } }
}
