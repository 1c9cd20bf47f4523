// MARK: - Errors

/// A sampling parameter or sampler argument that cannot be used.
public enum SamplingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `parameter` holds a value that is out of range; `reason` says which range is allowed.
    case invalid(parameter: String, reason: String)

    public var description: String {
        switch self {
        case let .invalid(parameter, reason):
            return "invalid sampling parameter '\(parameter)': \(reason)"
        }
    }
}

// MARK: - Parameters

/// Settings of the sampler chain, with llama.cpp's defaults.
///
/// The chain runs in llama.cpp's default order: repetition penalty, top-k, top-p,
/// min-p, temperature, then a seeded draw. Each stage has a value that turns it off.
///
/// Decoding fills any missing key with its default, so a partial JSON object such as
/// `{"temperature": 0}` is accepted. Decoding does not range-check; call ``validated()``.
public struct SamplingParameters: Sendable, Equatable, Codable {
    /// Softmax temperature. `0` means greedy (argmax, lowest token id on ties).
    public var temperature: Float
    /// Keep only the `topK` highest logits. `0` turns the stage off.
    public var topK: Int
    /// Keep the smallest set of most probable tokens whose probability adds up to at
    /// least `topP` (never fewer than one token). `1` turns the stage off.
    public var topP: Float
    /// Keep tokens whose probability is at least `minP` times the largest probability.
    /// `0` turns the stage off.
    public var minP: Float
    /// Divide positive logits by this value and multiply the others by it for every
    /// token seen in the last ``repeatLastN`` tokens. `1` turns the stage off.
    public var repeatPenalty: Float
    /// How many of the most recent tokens the repetition penalty looks at. `0` turns
    /// the stage off.
    public var repeatLastN: Int
    /// Subtracted from the logit of every token in the penalty window once (OpenAI's
    /// `presence_penalty`). `0` turns it off.
    public var presencePenalty: Float
    /// Subtracted from the logit of every token in the penalty window once per occurrence
    /// (OpenAI's `frequency_penalty`). `0` turns it off.
    public var frequencyPenalty: Float
    /// Added to the logits of these tokens before anything else (OpenAI's `logit_bias`;
    /// -100 all but bans a token, 100 all but forces it).
    public var logitBias: [Int32: Float]
    /// Seed of the random generator; `nil` draws a fresh seed from the system.
    public var seed: UInt64?

    /// Default values match llama.cpp's common sampler settings.
    public init(
        temperature: Float = 0.8,
        topK: Int = 40,
        topP: Float = 0.95,
        minP: Float = 0.05,
        repeatPenalty: Float = 1.0,
        repeatLastN: Int = 64,
        presencePenalty: Float = 0,
        frequencyPenalty: Float = 0,
        logitBias: [Int32: Float] = [:],
        seed: UInt64? = nil
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.repeatLastN = repeatLastN
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.logitBias = logitBias
        self.seed = seed
    }

    /// The range OpenAI allows for `presence_penalty` and `frequency_penalty`.
    public static let penaltyRange: ClosedRange<Float> = -2...2
    /// The range OpenAI allows for a `logit_bias` value.
    public static let logitBiasRange: ClosedRange<Float> = -100...100

    /// Largest accepted ``repeatLastN`` (far beyond any context length), so the
    /// sampler's token window stays a bounded allocation.
    public static let maximumRepeatLastN = 1 << 20

    /// Greedy decoding: always the highest logit after the repetition penalty.
    public static let greedy = SamplingParameters(temperature: 0)

    /// Returns `self` if every value is in range.
    /// - Throws: ``SamplingError/invalid(parameter:reason:)`` naming the first bad value.
    public func validated() throws -> SamplingParameters {
        guard temperature.isFinite, temperature >= 0 else {
            throw SamplingError.invalid(
                parameter: "temperature",
                reason: "must be a finite number >= 0 (0 = greedy), got \(temperature)")
        }
        guard topK >= 0 else {
            throw SamplingError.invalid(
                parameter: "topK", reason: "must be >= 0 (0 = off), got \(topK)")
        }
        guard topP > 0, topP <= 1 else {
            throw SamplingError.invalid(
                parameter: "topP", reason: "must be in (0, 1] (1 = off), got \(topP)")
        }
        guard minP >= 0, minP <= 1 else {
            throw SamplingError.invalid(
                parameter: "minP", reason: "must be in [0, 1] (0 = off), got \(minP)")
        }
        guard repeatPenalty.isFinite, repeatPenalty > 0 else {
            throw SamplingError.invalid(
                parameter: "repeatPenalty",
                reason: "must be a finite number > 0 (1 = off), got \(repeatPenalty)")
        }
        guard repeatLastN >= 0, repeatLastN <= Self.maximumRepeatLastN else {
            throw SamplingError.invalid(
                parameter: "repeatLastN",
                reason: "must be in 0...\(Self.maximumRepeatLastN) (0 = off), got \(repeatLastN)")
        }
        for (name, value) in [("presencePenalty", presencePenalty), ("frequencyPenalty", frequencyPenalty)] {
            guard value.isFinite, Self.penaltyRange.contains(value) else {
                throw SamplingError.invalid(parameter: name, reason: "must be in -2...2 (0 = off), got \(value)")
            }
        }
        for (token, bias) in logitBias.sorted(by: { $0.key < $1.key }) {
            guard token >= 0 else {
                throw SamplingError.invalid(parameter: "logitBias", reason: "token id \(token) is negative")
            }
            guard bias.isFinite, Self.logitBiasRange.contains(bias) else {
                throw SamplingError.invalid(parameter: "logitBias", reason: "the bias of token \(token) must be in -100...100, got \(bias)")
            }
        }
        return self
    }

    // MARK: Codable

    private enum CodingKeys: String, CodingKey {
        case temperature, topK, topP, minP, repeatPenalty, repeatLastN, presencePenalty, frequencyPenalty, logitBias, seed
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = SamplingParameters()
        temperature = try container.decodeIfPresent(Float.self, forKey: .temperature) ?? defaults.temperature
        topK = try container.decodeIfPresent(Int.self, forKey: .topK) ?? defaults.topK
        topP = try container.decodeIfPresent(Float.self, forKey: .topP) ?? defaults.topP
        minP = try container.decodeIfPresent(Float.self, forKey: .minP) ?? defaults.minP
        repeatPenalty = try container.decodeIfPresent(Float.self, forKey: .repeatPenalty) ?? defaults.repeatPenalty
        repeatLastN = try container.decodeIfPresent(Int.self, forKey: .repeatLastN) ?? defaults.repeatLastN
        presencePenalty = try container.decodeIfPresent(Float.self, forKey: .presencePenalty) ?? 0
        frequencyPenalty = try container.decodeIfPresent(Float.self, forKey: .frequencyPenalty) ?? 0
        logitBias = try container.decodeIfPresent([Int32: Float].self, forKey: .logitBias) ?? [:]
        seed = try container.decodeIfPresent(UInt64.self, forKey: .seed)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(temperature, forKey: .temperature)
        try container.encode(topK, forKey: .topK)
        try container.encode(topP, forKey: .topP)
        try container.encode(minP, forKey: .minP)
        try container.encode(repeatPenalty, forKey: .repeatPenalty)
        try container.encode(repeatLastN, forKey: .repeatLastN)
        try container.encode(presencePenalty, forKey: .presencePenalty)
        try container.encode(frequencyPenalty, forKey: .frequencyPenalty)
        if !logitBias.isEmpty { try container.encode(logitBias, forKey: .logitBias) }
        try container.encodeIfPresent(seed, forKey: .seed)
    }
}
