#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Log-probabilities of a logits row: the log-softmax of the model's raw logits, before any
/// sampling transform (temperature, penalties, bias, grammar), as OpenAI and llama.cpp report.
///
/// Scratch space is allocated once; a call allocates only its (small) result.
public final class LogprobCalculator {
    public let vocabularySize: Int
    private var best: [Int32]

    public init(vocabularySize: Int) {
        self.vocabularySize = vocabularySize
        best = []
        best.reserveCapacity(CompletionJob.maximumLogprobs + 1)
    }

    /// `log(sum(exp(logits)))`, computed stably in double precision.
    public func logSumExp(_ logits: UnsafeBufferPointer<Float>) -> Double {
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        guard maxLogit.isFinite else { return Double(maxLogit) }
        var sum = 0.0
        for v in logits { sum += exp(Double(v - maxLogit)) }
        return Double(maxLogit) + log(sum)
    }

    /// The log-probability of `token` and the `top` most likely tokens with theirs (best
    /// first; lower id first on ties).
    public func logprobs(_ logits: UnsafeBufferPointer<Float>, token: Int32, top: Int)
        -> (logprob: Float, top: [(token: Int32, logprob: Float)])
    {
        precondition(logits.count == vocabularySize)
        let lse = logSumExp(logits)
        let chosen = Float(Double(logits[Int(token)]) - lse)
        guard top > 0 else { return (chosen, []) }
        // A sorted list of the best `top` ids, kept by insertion (top <= 20).
        best.removeAll(keepingCapacity: true)
        func better(_ a: Int32, _ b: Int32) -> Bool {
            let la = logits[Int(a)], lb = logits[Int(b)]
            return la > lb || (la == lb && a < b)
        }
        for i in 0..<vocabularySize {
            let id = Int32(i)
            if best.count == top, !better(id, best[top - 1]) { continue }
            var at = best.count
            while at > 0 && better(id, best[at - 1]) { at -= 1 }
            best.insert(id, at: at)
            if best.count > top { best.removeLast() }
        }
        return (chosen, best.map { ($0, Float(Double(logits[Int($0)]) - lse)) })
    }
}
