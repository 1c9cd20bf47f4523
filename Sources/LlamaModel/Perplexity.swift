#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Perplexity over a token stream, computed the way llama.cpp's perplexity tool does:
/// the text is cut into chunks of `context` tokens, each chunk's first token is replaced by
/// BOS, the chunk is evaluated from an empty cache, and only the predictions in its second
/// half (positions context/2 ..< context-1 predicting the next token) are scored.
public struct PerplexityResult: Sendable {
    public var chunks: Int
    public var scoredTokens: Int
    public var negativeLogLikelihood: Double
    public var perplexity: Double { exp(negativeLogLikelihood / Double(max(scoredTokens, 1))) }
}

extension LlamaEngine {
    /// - Parameters:
    ///   - tokens: the whole text tokenized with BOS.
    ///   - context: chunk length.
    ///   - maxChunks: stop after this many chunks (nil: all).
    ///   - progress: called after each chunk with (chunk index, chunks, running result).
    public func perplexity(tokens: [Int32], context: Int, maxChunks: Int? = nil,
                           progress: ((Int, Int, PerplexityResult) -> Void)? = nil) throws -> PerplexityResult {
        guard context >= 4 else { throw ModelError.invalidConfig(key: "ctx", reason: "\(context) is too small (at least 4)") }
        guard context <= contextLength else { throw ModelError.promptTooLong(tokens: context, context: contextLength) }
        var chunks = tokens.count / context
        if let m = maxChunks { chunks = min(chunks, m) }
        guard chunks > 0 else {
            throw ModelError.invalidConfig(key: "ctx", reason: "the text has \(tokens.count) tokens, fewer than one chunk of \(context)")
        }
        let first = context / 2
        let vocab = config.vocabSize
        var result = PerplexityResult(chunks: 0, scoredTokens: 0, negativeLogLikelihood: 0)
        for c in 0..<chunks {
            var chunk = Array(tokens[(c * context)..<((c + 1) * context)])
            chunk[0] = bosID
            reset(sequence: 0)
            let logits = try evaluate(chunk, sequence: 0, startPosition: 0, logits: .from(first))
            logits.withUnsafeBufferPointer { l in
                for j in first..<(context - 1) {
                    let row = l.baseAddress! + (j - first) * vocab
                    var maxLogit = -Float.infinity
                    for v in 0..<vocab where row[v] > maxLogit { maxLogit = row[v] }
                    var sum = 0.0
                    for v in 0..<vocab { sum += Double(expf(row[v] - maxLogit)) }
                    let target = Int(tokens[c * context + j + 1])
                    result.negativeLogLikelihood += log(sum) - Double(row[target] - maxLogit)
                    result.scoredTokens += 1
                }
            }
            result.chunks += 1
            progress?(c, chunks, result)
        }
        reset(sequence: 0)
        return result
    }
}
