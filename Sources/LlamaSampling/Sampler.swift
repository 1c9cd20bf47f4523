#if canImport(Darwin)
import Darwin
#else
import Glibc
#endif

/// One token that survived the sampler's filters, with the probability it is drawn.
public struct SamplerCandidate: Sendable, Equatable {
    /// Token id.
    public var token: Int32
    /// Probability of drawing this token (after the temperature; all candidates add up to 1).
    public var probability: Double

    public init(token: Int32, probability: Double) {
        self.token = token
        self.probability = probability
    }
}

/// Picks the next token from a vector of logits the way llama.cpp's default sampler
/// chain does: logit bias, an optional constraint (a grammar's mask), the penalties over the
/// last `repeatLastN` tokens (repetition, presence, frequency), top-k, top-p, min-p,
/// temperature, then a draw from the softmax with a seeded xoshiro256** generator.
/// Temperature 0 picks the highest logit after bias, constraint and penalties (lowest token
/// id on ties). Each draw takes exactly one number from the generator.
///
/// All buffers are allocated once in `init`; sampling a token allocates nothing.
/// Not thread-safe: use one sampler per generated sequence.
///
/// The sampler never changes the caller's logits. Tokens enter the repetition window
/// only through ``accept(_:)`` (typically the prompt tokens, then every sampled token),
/// or are passed explicitly to ``sample(logits:history:)``.
public final class Sampler {
    /// The validated parameters this sampler runs with.
    public let parameters: SamplingParameters
    /// Number of logits expected per call.
    public let vocabularySize: Int
    /// The seed in use: ``SamplingParameters/seed`` or, if that was `nil`, the one drawn
    /// from the system, so that a run can be repeated.
    public let seed: UInt64

    var generator: Xoshiro256StarStar

    // MARK: Preallocated buffers

    /// Logits after sanitising and the repetition penalty, indexed by token id.
    let adjustedLogits: UnsafeMutableBufferPointer<Float>
    /// Token ids of the current candidates, in `0..<candidateCount`.
    let candidateTokens: UnsafeMutableBufferPointer<Int32>
    /// Unnormalised drawing weight of each candidate, in `0..<candidateCount`.
    let candidateWeights: UnsafeMutableBufferPointer<Double>
    var candidateCount = 0
    var candidateWeightSum = 0.0

    /// Marks tokens already seen in this penalty pass (`penaltyStamps[t] == currentStamp`).
    let penaltyStamps: UnsafeMutableBufferPointer<UInt32>
    private var currentStamp: UInt32 = 0
    /// Occurrences of each stamped token in the penalty window.
    let penaltyCounts: UnsafeMutableBufferPointer<UInt32>
    /// The distinct tokens of the current penalty pass.
    let penaltyTokens: UnsafeMutableBufferPointer<Int32>
    /// Logit bias as parallel arrays (token ids already checked against the vocabulary).
    let biasTokens: [Int]
    let biasValues: [Float]

    /// Per-bucket probability mass for top-p over the whole vocabulary.
    let bucketMass: UnsafeMutableBufferPointer<Double>

    /// Ring buffer of the last `repeatLastN` accepted tokens.
    let recentRing: UnsafeMutableBufferPointer<Int32>
    var recentCount = 0
    var recentNextSlot = 0

    /// Creates a sampler for a vocabulary of `vocabularySize` tokens.
    /// - Throws: ``SamplingError/invalid(parameter:reason:)`` if a parameter is out of
    ///   range or `vocabularySize` is not in `1...Int32.max`.
    public init(parameters: SamplingParameters, vocabularySize: Int) throws {
        self.parameters = try parameters.validated()
        guard vocabularySize > 0, vocabularySize <= Int(Int32.max) else {
            throw SamplingError.invalid(
                parameter: "vocabularySize",
                reason: "must be in 1...\(Int32.max), got \(vocabularySize)")
        }
        self.vocabularySize = vocabularySize
        let seed = parameters.seed ?? UInt64.random(in: .min ... .max)
        self.seed = seed
        generator = Xoshiro256StarStar(seed: seed)

        adjustedLogits = .allocate(capacity: vocabularySize)
        candidateTokens = .allocate(capacity: vocabularySize)
        candidateWeights = .allocate(capacity: vocabularySize)
        penaltyStamps = .allocate(capacity: vocabularySize)
        penaltyStamps.initialize(repeating: 0)
        penaltyCounts = .allocate(capacity: vocabularySize)
        penaltyCounts.initialize(repeating: 0)
        penaltyTokens = .allocate(capacity: max(parameters.repeatLastN, 1))
        let bias = parameters.logitBias.sorted { $0.key < $1.key }
        if let bad = bias.first(where: { Int($0.key) >= vocabularySize }) {
            throw SamplingError.invalid(parameter: "logitBias",
                                        reason: "token id \(bad.key) is outside the vocabulary of \(vocabularySize)")
        }
        biasTokens = bias.map { Int($0.key) }
        biasValues = bias.map(\.value)
        recentRing = .allocate(capacity: max(parameters.repeatLastN, 1))
        bucketMass = .allocate(capacity: Self.bucketCount)
    }

    deinit {
        adjustedLogits.deallocate()
        candidateTokens.deallocate()
        candidateWeights.deallocate()
        penaltyStamps.deallocate()
        penaltyCounts.deallocate()
        penaltyTokens.deallocate()
        recentRing.deallocate()
        bucketMass.deallocate()
    }

    // MARK: - Token window

    /// Appends `token` to the window the repetition penalty looks at (the last
    /// ``SamplingParameters/repeatLastN`` accepted tokens).
    public func accept(_ token: Int32) {
        precondition(token >= 0 && Int(token) < vocabularySize,
                     "token \(token) outside vocabulary of \(vocabularySize)")
        let capacity = parameters.repeatLastN
        guard capacity > 0 else { return }
        recentRing[recentNextSlot] = token
        recentNextSlot = recentNextSlot + 1 == capacity ? 0 : recentNextSlot + 1
        recentCount = min(recentCount + 1, capacity)
    }

    /// Appends every token of `tokens`, in order (for instance the prompt).
    public func accept(contentsOf tokens: some Sequence<Int32>) {
        for token in tokens { accept(token) }
    }

    /// The tokens currently in the repetition window, oldest first.
    public var recentTokens: [Int32] {
        let capacity = parameters.repeatLastN
        guard recentCount > 0 else { return [] }
        let start = (recentNextSlot - recentCount + capacity) % capacity
        return (0..<recentCount).map { recentRing[(start + $0) % capacity] }
    }

    /// Empties the token window and restarts the random sequence from ``seed``.
    public func reset() {
        recentCount = 0
        recentNextSlot = 0
        generator = Xoshiro256StarStar(seed: seed)
    }

    // MARK: - Sampling

    /// Draws the next token, penalising the tokens given to ``accept(_:)``.
    /// `logits.count` must equal ``vocabularySize``. Does not accept the drawn token.
    ///
    /// `constrain`, when given, sees the biased logits (indexed by token id) before the
    /// penalties and may set any of them to -infinity (a grammar's mask).
    public func sample(logits: UnsafeBufferPointer<Float>,
                       constrain: ((UnsafeMutableBufferPointer<Float>) -> Void)? = nil) -> Int32 {
        prepareLogits(logits)
        applyBias()
        constrain?(adjustedLogits)
        applyPenaltyToRecentWindow()
        return chooseToken()
    }

    /// Draws the next token, penalising the last ``SamplingParameters/repeatLastN``
    /// tokens of `history` instead of the accepted window.
    public func sample(logits: UnsafeBufferPointer<Float>, history: some Collection<Int32>) -> Int32 {
        prepareLogits(logits)
        applyBias()
        applyPenalty(to: history.suffix(parameters.repeatLastN))
        return chooseToken()
    }

    /// Same as the `UnsafeBufferPointer` form; the logits are left unchanged.
    public func sample(logits: UnsafeMutableBufferPointer<Float>) -> Int32 {
        sample(logits: UnsafeBufferPointer(logits))
    }

    /// Same as the `UnsafeBufferPointer` form with history; the logits are left unchanged.
    public func sample(logits: UnsafeMutableBufferPointer<Float>, history: some Collection<Int32>) -> Int32 {
        sample(logits: UnsafeBufferPointer(logits), history: history)
    }

    /// Convenience for an array of logits.
    public func sample(logits: [Float]) -> Int32 {
        logits.withUnsafeBufferPointer { sample(logits: $0) }
    }

    /// Convenience for an array of logits with an explicit history.
    public func sample(logits: [Float], history: some Collection<Int32>) -> Int32 {
        logits.withUnsafeBufferPointer { sample(logits: $0, history: history) }
    }

    /// The tokens that could be drawn from `logits` with the accepted window, and their
    /// probabilities, best first (lower id first on ties). Does not advance the random
    /// generator. Allocates the result; meant for inspection and tests.
    public func candidates(logits: [Float]) -> [SamplerCandidate] {
        logits.withUnsafeBufferPointer { prepareLogits($0) }
        applyBias()
        applyPenaltyToRecentWindow()
        return collectCandidates()
    }

    /// As ``candidates(logits:)`` but penalising the last tokens of `history`.
    public func candidates(logits: [Float], history: some Collection<Int32>) -> [SamplerCandidate] {
        logits.withUnsafeBufferPointer { prepareLogits($0) }
        applyBias()
        applyPenalty(to: history.suffix(parameters.repeatLastN))
        return collectCandidates()
    }

    // MARK: - Chain stages

    /// Copies the logits, turning NaN into -inf and +inf into the largest finite value
    /// so the softmax stays defined.
    private func prepareLogits(_ logits: UnsafeBufferPointer<Float>) {
        precondition(logits.count == vocabularySize,
                     "got \(logits.count) logits for a vocabulary of \(vocabularySize)")
        let adjusted = adjustedLogits
        for i in 0..<vocabularySize {
            let value = logits[i]
            // NaN fails both comparisons and becomes -inf.
            adjusted[i] = value < .infinity
                ? (value >= -.infinity ? value : -.infinity)
                : (value == .infinity ? .greatestFiniteMagnitude : -.infinity)
        }
    }

    private func applyBias() {
        for (i, token) in biasTokens.enumerated() { adjustedLogits[token] += biasValues[i] }
    }

    private var penaltyIsActive: Bool {
        (parameters.repeatPenalty != 1 || parameters.presencePenalty != 0 || parameters.frequencyPenalty != 0)
            && parameters.repeatLastN > 0
    }

    private func applyPenaltyToRecentWindow() {
        guard penaltyIsActive, recentCount > 0 else { return }
        beginPenaltyPass()
        var distinct = 0
        for slot in 0..<recentCount { count(recentRing[slot], distinct: &distinct) }
        penaliseCounted(distinct)
    }

    private func applyPenalty(to window: some Collection<Int32>) {
        guard penaltyIsActive else { return }
        beginPenaltyPass()
        var distinct = 0
        for token in window {
            precondition(token >= 0 && Int(token) < vocabularySize,
                         "history token \(token) outside vocabulary of \(vocabularySize)")
            count(token, distinct: &distinct)
        }
        penaliseCounted(distinct)
    }

    private func beginPenaltyPass() {
        currentStamp &+= 1
        if currentStamp == 0 {
            penaltyStamps.update(repeating: 0)
            currentStamp = 1
        }
    }

    /// Counts one occurrence of `token` in the window of this pass.
    @inline(__always)
    private func count(_ token: Int32, distinct: inout Int) {
        let index = Int(token)
        if penaltyStamps[index] != currentStamp {
            penaltyStamps[index] = currentStamp
            penaltyCounts[index] = 1
            penaltyTokens[distinct] = token
            distinct += 1
        } else {
            penaltyCounts[index] += 1
        }
    }

    /// Applies the repetition penalty once per distinct token of the window, the presence
    /// penalty once and the frequency penalty once per occurrence (OpenAI's definitions).
    private func penaliseCounted(_ distinct: Int) {
        let repeatPenalty = parameters.repeatPenalty
        let presence = parameters.presencePenalty, frequency = parameters.frequencyPenalty
        for i in 0..<distinct {
            let index = Int(penaltyTokens[i])
            var logit = adjustedLogits[index]
            if repeatPenalty != 1 { logit = logit > 0 ? logit / repeatPenalty : logit * repeatPenalty }
            logit -= presence + frequency * Float(penaltyCounts[index])
            adjustedLogits[index] = logit
        }
    }

    /// Highest adjusted logit, lowest id on ties.
    private func argmaxToken() -> Int32 {
        let adjusted = adjustedLogits
        var best = 0
        var bestLogit = adjusted[0]
        for i in 1..<vocabularySize where adjusted[i] > bestLogit {
            best = i
            bestLogit = adjusted[i]
        }
        return Int32(best)
    }

    private func chooseToken() -> Int32 {
        if parameters.temperature == 0 { return argmaxToken() }
        filterCandidates()
        let tokens = candidateTokens
        let weights = candidateWeights
        let target = generator.nextUnitDouble() * candidateWeightSum
        var cumulative = 0.0
        for i in 0..<candidateCount {
            cumulative += weights[i]
            if target < cumulative { return tokens[i] }
        }
        return tokens[candidateCount - 1]
    }

    private func collectCandidates() -> [SamplerCandidate] {
        if parameters.temperature == 0 {
            return [SamplerCandidate(token: argmaxToken(), probability: 1)]
        }
        filterCandidates()
        return (0..<candidateCount)
            .map { (token: candidateTokens[$0], weight: candidateWeights[$0]) }
            .sorted { ranksBefore($0.token, $1.token) }
            .map { SamplerCandidate(token: $0.token, probability: $0.weight / candidateWeightSum) }
    }

    /// Runs top-k, top-p, min-p and temperature over `adjustedLogits`, leaving the
    /// survivors in `candidateTokens[0..<candidateCount]` and their weights in
    /// `candidateWeights` (summing to `candidateWeightSum`).
    private func filterCandidates() {
        let n = vocabularySize
        let adjusted = adjustedLogits
        let tokens = candidateTokens
        var count: Int
        var isSorted: Bool
        var maxLogit: Float = -.infinity

        // Top-k.
        if parameters.topK > 0 && parameters.topK < n {
            count = parameters.topK
            selectBest(count, among: n, wholeVocabulary: true)
            maxLogit = adjusted[Int(tokens[0])]
            isSorted = true
        } else {
            for i in 0..<n {
                tokens[i] = Int32(i)
                maxLogit = max(maxLogit, adjusted[i])
            }
            count = n
            isSorted = false
        }

        // Every logit is -inf: nothing is more likely than anything else.
        if maxLogit == -.infinity {
            tokens[0] = argmaxToken()
            candidateWeights[0] = 1
            candidateCount = 1
            candidateWeightSum = 1
            return
        }

        // Top-p, on the softmax at temperature 1 of the current candidates.
        if parameters.topP < 1 {
            if isSorted {
                var total = 0.0
                for i in 0..<count {
                    total += Double(expf(adjusted[Int(tokens[i])] - maxLogit))
                }
                let target = Double(parameters.topP) * total
                var cumulative = 0.0
                for i in 0..<count {
                    cumulative += Double(expf(adjusted[Int(tokens[i])] - maxLogit))
                    if cumulative >= target {
                        count = i + 1
                        break
                    }
                }
            } else {
                count = topPOverWholeVocabulary(maxLogit: maxLogit)
            }
        }

        // Min-p: p_i >= minP * p_max  <=>  logit_i >= maxLogit + log(minP).
        if parameters.minP > 0 {
            let threshold = maxLogit + logf(parameters.minP)
            if isSorted {
                var keep = 1
                while keep < count && adjusted[Int(tokens[keep])] >= threshold { keep += 1 }
                count = keep
            } else {
                var kept = 0
                for i in 0..<count {
                    let token = tokens[i]
                    if adjusted[Int(token)] >= threshold {
                        tokens[kept] = token
                        kept += 1
                    }
                }
                count = kept
            }
        }

        // Temperature and softmax weights.
        let weights = candidateWeights
        let inverseTemperature = 1 / parameters.temperature
        var sum = 0.0
        for i in 0..<count {
            let scaled = (adjusted[Int(tokens[i])] - maxLogit) * inverseTemperature
            let weight = Double(expf(scaled))
            weights[i] = weight
            sum += weight
        }
        candidateCount = count
        candidateWeightSum = sum
    }
}
