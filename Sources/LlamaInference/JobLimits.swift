import LlamaSampling

/// The one place a job's values are checked against what the model and the server allow.
/// Errors name the request field at fault by its API name.
public struct JobLimits: Sendable {
    public var contextLength: Int
    public var vocabularySize: Int
    /// Most choices one request may ask for (`n`): the number of slots.
    public var slotCount: Int

    public init(contextLength: Int, vocabularySize: Int, slotCount: Int) {
        self.contextLength = contextLength
        self.vocabularySize = vocabularySize
        self.slotCount = slotCount
    }

    /// The job with `maxTokens` clamped to the room the context leaves.
    /// - Throws: ``BackendError/invalidRequest(_:param:)``.
    public func validate(_ job: CompletionJob) throws -> CompletionJob {
        func bad(_ message: String, _ param: String) -> BackendError { .invalidRequest(message, param: param) }
        var job = job
        guard !job.promptTokens.isEmpty else { throw bad("the prompt is empty", "prompt") }
        guard job.promptTokens.count < contextLength else {
            throw bad("the prompt is \(job.promptTokens.count) tokens long but the context holds \(contextLength) positions; "
                      + "it must be shorter than the context to leave room for the completion", "prompt")
        }
        if let id = job.promptTokens.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw bad("token id \(id) is outside the vocabulary of \(vocabularySize)", "prompt")
        }
        let room = contextLength - job.promptTokens.count
        if let n = job.maxTokens {
            guard n >= 0 else { throw bad("'max_tokens' must be >= 0, got \(n)", "max_tokens") }
            job.maxTokens = min(n, room)
        } else {
            job.maxTokens = room
        }
        do {
            job.parameters = try job.parameters.validated()
        } catch let SamplingError.invalid(parameter, reason) {
            let name = Self.apiName(ofSamplingParameter: parameter)
            throw bad("'\(name)' \(reason)", name)
        }
        if let id = job.parameters.logitBias.keys.first(where: { Int($0) >= vocabularySize }) {
            throw bad("'logit_bias' names token \(id), outside the vocabulary of \(vocabularySize)", "logit_bias")
        }
        guard job.stop.count <= CompletionJob.maximumStopStrings else {
            throw bad("'stop' holds \(job.stop.count) strings; at most \(CompletionJob.maximumStopStrings) are allowed", "stop")
        }
        guard !job.stop.contains("") else { throw bad("'stop' strings must not be empty", "stop") }
        if let n = job.logprobs {
            guard (0...CompletionJob.maximumLogprobs).contains(n) else {
                throw bad("'logprobs' must be in 0...\(CompletionJob.maximumLogprobs), got \(n)", "logprobs")
            }
        }
        guard (1...slotCount).contains(job.choices) else {
            throw bad("'n' must be in 1...\(slotCount) (the server's slots), got \(job.choices)", "n")
        }
        return job
    }

    /// The request field name of a ``SamplingParameters`` property.
    public static func apiName(ofSamplingParameter name: String) -> String {
        switch name {
        case "topK": return "top_k"
        case "topP": return "top_p"
        case "minP": return "min_p"
        case "repeatPenalty": return "repeat_penalty"
        case "repeatLastN": return "repeat_last_n"
        case "presencePenalty": return "presence_penalty"
        case "frequencyPenalty": return "frequency_penalty"
        case "logitBias": return "logit_bias"
        default: return name
        }
    }
}
