import TestSupport
import LlamaGrammar

// MARK: - Sampling with random logits

/// Generates outputs under a grammar over the real vocabulary with random logits: every
/// step draws a fresh uniform logit in [0, 1) for each token, adds to the tokens whose
/// piece holds a closing character (`"` `,` `]` `}` `)` or a newline) and to end-of-text
/// a bias drawn once per output (in [0, 2)), masks, and takes the largest. The bias only
/// makes outputs end in a reasonable number of tokens; every choice is still random.
struct RandomSampler {
    /// Tokens favoured by the bias.
    static let closing: [Bool] = {
        let tokenizer = RealVocabulary.tokenizer
        return (0..<Int32(tokenizer.vocabularySize)).map { id in
            id == tokenizer.eosID || tokenizer.piece(id).contains { "\",]})\n".utf8.contains($0) }
        }
    }()

    /// One generated output.
    struct Output {
        var bytes: [UInt8]
        var tokens: [Int32]
        /// Ended by end-of-text or a finished grammar (not by the length cap).
        var ended: Bool
        /// The grammar could end where the output stopped.
        var canEnd: Bool
        /// Some step left no token allowed although the grammar was not finished.
        var deadEnd: Bool
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    var generator: SeededGenerator
    private var logits = [Float](repeating: 0, count: RealVocabulary.tokenizer.vocabularySize)

    init(seed: UInt64) {
        generator = SeededGenerator(seed: seed)
    }

    /// Samples one output of at most `cap` tokens.
    mutating func sample(_ grammar: Grammar, cap: Int) -> Output {
        var matcher = GrammarMatcher(grammar: grammar, vocabulary: RealVocabulary.grammarVocabulary)
        var output = Output(bytes: [], tokens: [], ended: false, canEnd: false, deadEnd: false)
        let bias = generator.unit() * 2
        let closing = RandomSampler.closing
        while output.tokens.count < cap {
            if matcher.isFinished {
                output.ended = true
                break
            }
            var best = -Float.infinity
            var chosen: Int32 = -1
            logits.withUnsafeMutableBufferPointer { buffer in
                for index in buffer.indices {
                    buffer[index] = generator.unit() + (closing[index] ? bias : 0)
                }
                matcher.mask(logits: buffer)
                for index in buffer.indices where buffer[index] > best {
                    best = buffer[index]
                    chosen = Int32(index)
                }
            }
            guard chosen >= 0 else {
                output.deadEnd = true
                break
            }
            do {
                try matcher.accept(chosen)
            } catch {
                output.deadEnd = true  // mask allowed a token that accept refused
                break
            }
            if chosen == RealVocabulary.eos {
                output.ended = true
                break
            }
            output.tokens.append(chosen)
            output.bytes += RealVocabulary.tokenizer.piece(chosen)
        }
        output.canEnd = output.ended || matcher.canEnd
        return output
    }
}
