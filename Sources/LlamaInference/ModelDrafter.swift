import Foundation
import GGUF
import LlamaModel
import LlamaTokenizer

/// Speculative decoding with a small draft model (llama-server's `--model-draft`): a second,
/// smaller GGUF with the target's vocabulary, run in full on the scheduler's host, proposes
/// the next tokens greedily; the target checks them all in one frame.
///
/// Each KV-cache slot of the target has one here. A slot remembers which tokens its cache
/// holds, so the next draft only runs the tokens that are new since (the target's accepted
/// tokens, or a new request's prompt past the common prefix); a rejected draft's entries
/// are overwritten by the next run. Drafting stops early when the draft model's own
/// probability of its choice falls below `minProbability` (llama.cpp's `--draft-p-min`).
///
/// Not thread-safe: the scheduler's thread calls it.
public final class ModelDrafter {
    public let path: String
    public let minProbability: Float
    private let engine: LlamaEngine
    private let vocab: Int
    /// The tokens whose keys and values each slot's cache holds, in position order.
    private var cached: [[Int32]]
    private var logits: [Float]

    /// Opens the draft model for `slots` sequences of up to `contextLength` positions.
    /// Throws, naming the difference, unless its vocabulary is the target's token for token.
    public init(path: String, target: Vocabulary, slots: Int, contextLength: Int, threads: Int = 1,
                minProbability: Float = 0.75) throws {
        let file = try GGUFFile(path: path)
        let vocabulary = try Vocabulary(gguf: file)
        guard vocabulary.count == target.count else {
            throw ModelError.invalidConfig(key: "tokenizer.ggml.tokens",
                                           reason: "the draft model \(path) has \(vocabulary.count) tokens, the model \(target.count)")
        }
        if let i = (0..<target.count).first(where: { vocabulary.tokens[$0] != target.tokens[$0] }) {
            throw ModelError.invalidConfig(key: "tokenizer.ggml.tokens",
                                           reason: "the draft model \(path) differs from the model at token \(i) (\(vocabulary.tokens[i].debugDescription) vs \(target.tokens[i].debugDescription))")
        }
        guard minProbability >= 0, minProbability <= 1 else {
            throw ModelError.invalidConfig(key: "draft-p-min", reason: "\(minProbability) is not in 0...1")
        }
        let config = try LlamaConfig(gguf: file)
        self.path = path
        self.minProbability = minProbability
        engine = try LlamaEngine(path: path, threads: threads, maxSequences: slots,
                                 contextLength: min(contextLength, config.contextLength), maxBatch: 512)
        vocab = config.vocabSize
        cached = [[Int32]](repeating: [], count: slots)
        logits = [Float](repeating: 0, count: config.vocabSize)
    }

    /// Positions each slot of the draft model holds.
    public var contextLength: Int { engine.contextLength }

    /// Up to `limit` tokens the draft model expects after `tokens` (the sequence in `slot`),
    /// or none when they would not fit its context or it fails.
    public func draft(slot: Int32, tokens: [Int32], limit: Int) -> [Int32] {
        let s = Int(slot)
        guard limit > 0, s >= 0, s < cached.count, !tokens.isEmpty,
              tokens.count + limit <= engine.contextLength else { return [] }
        // The common prefix is kept; the last token is always run again for its logits.
        var common = 0
        let old = cached[s]
        let most = min(old.count, tokens.count - 1)
        while common < most, old[common] == tokens[common] { common += 1 }
        var out: [Int32] = []
        out.reserveCapacity(limit)
        do {
            try run(Array(tokens[common...]), slot: slot, at: common)
            cached[s].removeSubrange(min(common, cached[s].count)...)
            cached[s].append(contentsOf: tokens[common...])
            while true {
                let (token, p) = best()
                guard p >= minProbability else { break }
                out.append(token)
                guard out.count < limit else { break }
                try run([token], slot: slot, at: tokens.count + out.count - 1)
                cached[s].append(token)
            }
        } catch {
            // A draft is only a guess: drop this slot's state and draft nothing.
            cached[s] = []
            engine.reset(sequence: slot)
            return []
        }
        return out
    }

    private func run(_ tokens: [Int32], slot: Int32, at position: Int) throws {
        try logits.withUnsafeMutableBufferPointer {
            try engine.evaluate(tokens, sequence: slot, startPosition: position, logits: .last, into: $0.baseAddress!)
        }
    }

    /// The most likely token (lowest id on ties) and its probability.
    private func best() -> (Int32, Float) {
        logits.withUnsafeBufferPointer { l in
            var top = 0
            for i in 1..<vocab where l[i] > l[top] { top = i }
            let m = l[top]
            var sum: Float = 0
            for i in 0..<vocab { sum += expf(l[i] - m) }
            return (Int32(top), 1 / sum)
        }
    }
}
