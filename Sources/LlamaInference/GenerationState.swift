import LlamaGrammar
import LlamaSampling
import LlamaTokenizer

/// Everything one choice of a request carries while it generates: its sampler (with the
/// seeded random generator, which only sampling advances), its grammar position, the text
/// release (UTF-8 holdback and stop strings), its limits and its token count. The cluster
/// coordinator and the one-process server both drive it, one logits row at a time.
public final class GenerationState {
    /// What taking one token produced.
    public struct Step {
        /// Text now released and the tokens it completes.
        public var text: String
        public var tokens: [TokenLogprob]
        /// Whether the token becomes part of the sequence (false for end-of-text).
        public var appended: Bool
        /// Set when the choice has ended.
        public var finished: FinishReason?
    }

    public let choice: Int
    public let sampler: Sampler
    private var grammar: GrammarMatcher?
    private var release: TextRelease
    private let tokenizer: LlamaTokenizer
    private let logprobs: LogprobCalculator
    private let logprobCount: Int?
    private let maxTokens: Int
    private let contextLength: Int
    /// Tokens generated so far (end-of-text not counted).
    public private(set) var generated = 0
    public private(set) var finishReason: FinishReason?

    /// - Parameters:
    ///   - job: a validated job (``JobLimits/validate(_:)``); `maxTokens` is set.
    ///   - seed: this choice's seed (the job's seed plus the choice index).
    ///   - history: tokens the penalties look back at first (the prompt).
    public init(choice: Int, job: CompletionJob, seed: UInt64, tokenizer: LlamaTokenizer, logprobs: LogprobCalculator,
                grammarVocabulary: GrammarVocabulary?, contextLength: Int, history: [Int32]) throws {
        self.choice = choice
        var parameters = job.parameters
        parameters.seed = seed
        sampler = try Sampler(parameters: parameters, vocabularySize: tokenizer.vocabularySize)
        sampler.accept(contentsOf: history)
        if let g = job.grammar, let v = grammarVocabulary { grammar = GrammarMatcher(grammar: g, vocabulary: v) }
        release = TextRelease(stopStrings: job.stop)
        self.tokenizer = tokenizer
        self.logprobs = logprobs
        logprobCount = job.logprobs
        maxTokens = job.maxTokens ?? contextLength
        self.contextLength = contextLength
    }

    /// Draws the next token from the logits row predicting it (grammar mask, bias and
    /// penalties applied to the sampler's copy; the row itself is left as it is).
    public func sample(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        if grammar == nil { return sampler.sample(logits: logits) }
        return sampler.sample(logits: logits) { [self] adjusted in grammar!.mask(logits: adjusted) }
    }

    /// Takes the token drawn from `logits`; `historyCount` is the length of the sequence
    /// (prompt and generated) once the token is appended.
    public func take(_ token: Int32, logits: UnsafeBufferPointer<Float>, historyCount: Int) -> Step {
        precondition(finishReason == nil, "the choice has ended")
        if token == tokenizer.eosID {
            return end(.stop)
        }
        if grammar != nil {
            guard (try? grammar!.accept(token)) != nil else { return end(.stop) }
        }
        sampler.accept(token)
        generated += 1
        var record = TokenLogprob(token: token, bytes: tokenizer.piece(token), logprob: nil)
        if let n = logprobCount { fillLogprobs(&record, logits, top: n) }
        var (text, tokens) = release.append(record)
        if release.isStopped {
            finishReason = .stop
            return Step(text: text, tokens: tokens, appended: true, finished: .stop)
        }
        let grammarDone = grammar?.isFinished ?? false
        if grammarDone || generated >= maxTokens || historyCount >= contextLength {
            let rest = release.finish()
            text += rest.text
            tokens += rest.tokens
            finishReason = grammarDone ? .stop : .length
        }
        return Step(text: text, tokens: tokens, appended: true, finished: finishReason)
    }

    /// Ends the choice (end-of-text, or a grammar that admits nothing more).
    private func end(_ reason: FinishReason) -> Step {
        finishReason = reason
        let rest = release.finish()
        return Step(text: rest.text, tokens: rest.tokens, appended: false, finished: reason)
    }

    /// Sets the log-probability of `record.token` and the `top` best alternatives.
    func fillLogprobs(_ record: inout TokenLogprob, _ logits: UnsafeBufferPointer<Float>, top: Int) {
        let (lp, best) = logprobs.logprobs(logits, token: record.token, top: top)
        record.logprob = lp
        record.top = best.map { .init(token: $0.token, bytes: tokenizer.piece($0.token), logprob: $0.logprob) }
    }
}
