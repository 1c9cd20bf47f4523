#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LlamaSampling
import LlamaTokenizer

/// Token counts and timings of one generation.
public struct GenerationStats: Sendable, Equatable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var promptSeconds = 0.0
    public var generationSeconds = 0.0
    public var stoppedAtEOS = false
    public var tokens: [Int32] = []
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

extension LlamaEngine {
    /// Generates up to `maxTokens` tokens after `prompt` in sequence 0, calling `onText` with each
    /// newly completed piece of text (UTF-8 characters split across tokens are held back until
    /// whole). Return false from `onText` to stop early.
    public func generate(prompt: String, parameters: SamplingParameters, maxTokens: Int,
                         onText: (String) -> Bool) throws -> GenerationStats {
        let promptTokens = tokenizer.encode(prompt, addBOS: true)
        return try generate(promptTokens: promptTokens, parameters: parameters, maxTokens: maxTokens, onText: onText)
    }

    public func generate(promptTokens: [Int32], parameters: SamplingParameters, maxTokens: Int,
                         onText: (String) -> Bool) throws -> GenerationStats {
        guard !promptTokens.isEmpty else { throw ModelError.sequence("the prompt is empty") }
        guard promptTokens.count < contextLength else {
            throw ModelError.promptTooLong(tokens: promptTokens.count, context: contextLength)
        }
        let sampler = try Sampler(parameters: parameters.validated(), vocabularySize: config.vocabSize)
        sampler.accept(contentsOf: promptTokens)
        var decoder = tokenizer.makeStreamingDecoder(startsText: false)
        var stats = GenerationStats(promptTokens: promptTokens.count)
        reset(sequence: 0)
        defer { reset(sequence: 0) }

        // One logits buffer and one token array for the whole generation: the loop allocates nothing.
        var logits = [Float](repeating: 0, count: config.vocabSize)
        var step: [Int32] = [0]
        var t0 = monotonicSeconds()
        try logits.withUnsafeMutableBufferPointer {
            try evaluate(promptTokens, startPosition: 0, logits: .last, into: $0.baseAddress!)
        }
        stats.promptSeconds = monotonicSeconds() - t0
        t0 = monotonicSeconds()
        var position = promptTokens.count
        stats.tokens.reserveCapacity(maxTokens)
        while stats.generatedTokens < maxTokens {
            let token = logits.withUnsafeMutableBufferPointer { sampler.sample(logits: $0) }
            if token == tokenizer.eosID {
                stats.stoppedAtEOS = true
                break
            }
            sampler.accept(token)
            stats.tokens.append(token)
            stats.generatedTokens += 1
            let text = decoder.append(token)
            if !text.isEmpty, !onText(text) { break }
            if stats.generatedTokens == maxTokens || position >= contextLength { break }
            step[0] = token
            try logits.withUnsafeMutableBufferPointer {
                try evaluate(step, startPosition: position, logits: .last, into: $0.baseAddress!)
            }
            position += 1
        }
        let rest = decoder.finish()
        if !rest.isEmpty { _ = onText(rest) }
        stats.generationSeconds = monotonicSeconds() - t0
        return stats
    }
}
