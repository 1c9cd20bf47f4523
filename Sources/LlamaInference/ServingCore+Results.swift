// MARK: - Turning logits into tokens

extension ServingCore {
    /// A prompt chunk (or replayed history) came back: echo rows, then perhaps the row that
    /// picks the next token.
    func finishPrefill(_ s: SequenceRecord, span: Span, rows: UnsafeBufferPointer<Float>, now: Double) {
        let r = s.request
        let vocab = tokenizer.vocabularySize
        s.computed = max(s.computed, span.first + span.count)
        s.awaitingLogits = false
        for (k, p) in span.rowPositions.enumerated() {
            let row = UnsafeBufferPointer(rebasing: rows[(k * vocab)..<((k + 1) * vocab)])
            if p + 1 < r.promptCount {
                reportPromptToken(r, position: p + 1, row: row)
            } else if p == s.tokens.count - 1 {
                if s.choice == 0 { fork(r, from: s, row: row, now: now) }
                sampleAndTake(s, row: row, now: now)
            }
        }
        // An echo-only job ends once its whole prompt has been computed.
        if r.job.maxTokens == 0, s.computed >= r.promptCount, !r.closed {
            for c in r.choices where !c.done { finish(c, .length, now: now) }
        }
    }

    /// The log-probability of prompt token `position` (echo); the prompt event goes out once
    /// every token has one.
    private func reportPromptToken(_ r: RequestRecord, position: Int, row: UnsafeBufferPointer<Float>) {
        guard position == r.promptReported || (position == 1 && r.promptReported == 0) else { return }
        if r.promptReported == 0 {
            r.promptRows.append(TokenLogprob(token: r.job.promptTokens[0], bytes: tokenizer.piece(r.job.promptTokens[0]), logprob: nil))
            r.promptReported = 1
        }
        let token = r.job.promptTokens[position]
        let (lp, top) = logprobs.logprobs(row, token: token, top: r.job.logprobs ?? 0)
        r.promptRows.append(TokenLogprob(token: token, bytes: tokenizer.piece(token), logprob: lp,
                                         top: top.map { .init(token: $0.token, bytes: tokenizer.piece($0.token), logprob: $0.logprob) }))
        r.promptReported = position + 1
        if r.promptReported == r.promptCount {
            r.sink.yield(.prompt(r.promptRows))
            r.promptRows = []
        }
    }

    /// Choice 0's prompt is computed: the other choices get a copy of its cache and sample
    /// their first token from the same logits.
    private func fork(_ r: RequestRecord, from s: SequenceRecord, row: UnsafeBufferPointer<Float>, now: Double) {
        for child in r.choices.dropFirst() where child.waitingForFork && !child.done {
            pendingCopies.append(CacheCopy(source: s.slot, destination: child.slot, count: Int32(r.promptCount)))
            child.waitingForFork = false
            child.sent = r.promptCount
            child.computed = r.promptCount
            sampleAndTake(child, row: row, now: now)
        }
    }

    /// A decode frame came back: its first row picks the next token; while the token picked
    /// equals the next drafted token, the draft's own row picks the one after (every row is
    /// sampled with the same sampler in order, so the text is what one token per frame gives).
    func verify(_ s: SequenceRecord, rows: UnsafeBufferPointer<Float>, now: Double) {
        let vocab = tokenizer.vocabularySize
        let draft = s.draft
        s.draft = []
        s.awaitingLogits = false
        s.computed = s.tokens.count
        var accepted = 0
        for j in 0...draft.count {
            let row = UnsafeBufferPointer(rebasing: rows[(j * vocab)..<((j + 1) * vocab)])
            let token = sampleAndTake(s, row: row, now: now)
            guard !s.done, j < draft.count, token == draft[j] else { break }
            // The drafted token is now the sequence's; its keys and values are already computed.
            accepted += 1
            s.computed += 1
            s.sent = s.computed
        }
        s.sent = s.computed
        if !draft.isEmpty {
            metrics.draftChecked(drafted: draft.count, accepted: accepted)
            adaptDrafting(s, drafted: draft.count, accepted: accepted)
        }
    }

    /// Drafts cost a row of work each on every stage, accepted or not. After a draft accepted
    /// whole, the next may be twice as long (up to the settings' maximum); otherwise it is at
    /// most one longer than what was accepted; after one rejected whole, the sequence drafts
    /// nothing for a pause that doubles with each such draft in a row (1, 2, 4, ... 16 steps),
    /// so text the history does not predict costs little more than decoding without drafts.
    /// The text is the same either way: only how many tokens are checked at once changes.
    func adaptDrafting(_ s: SequenceRecord, drafted: Int, accepted: Int) {
        let most = settings.speculative?.maxDraft ?? drafted
        if accepted == drafted {
            s.draftLimit = min(most, max(1, drafted) * 2)
        } else {
            s.draftLimit = min(most, accepted + 1)
        }
        if accepted == 0 {
            s.draftPause = s.draftPauseLength
            s.draftPauseLength = min(16, s.draftPauseLength * 2)
        } else {
            s.draftPauseLength = 1
        }
    }

    /// Samples the next token of `s` from `row` and takes it; returns it.
    @discardableResult
    func sampleAndTake(_ s: SequenceRecord, row: UnsafeBufferPointer<Float>, now: Double) -> Int32 {
        let token = s.generation.sample(row)
        let step = s.generation.take(token, logits: row, historyCount: s.tokens.count + 1)
        if step.appended {
            s.tokens.append(token)
            metrics.tokenGenerated()
        }
        let r = s.request
        if !step.text.isEmpty || !step.tokens.isEmpty {
            if r.firstTokenAt == nil { r.firstTokenAt = now }
            r.lastTokenAt = now
            r.sink.yield(.text(choice: s.choice, step.text, tokens: step.tokens))
        }
        if let reason = step.finished { finish(s, reason, now: now) }
        return token
    }

    /// Ends one choice; the request ends with its last choice.
    func finish(_ s: SequenceRecord, _ reason: FinishReason, now: Double) {
        guard !s.done else { return }
        let r = s.request
        r.sink.yield(.finished(choice: s.choice, reason, completionTokens: s.generation.generated))
        table.release(s)
        if r.choices.allSatisfy(\.done) {
            table.remove(r)
            r.sink.finish()
            metrics.requestEnded(r, now: now, failed: false)
        }
    }
}
