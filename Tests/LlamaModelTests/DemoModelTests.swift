import TestSupport
import Foundation
import LlamaModel
import LlamaTokenizer
import Testing

/// The trained demo model against llama.cpp's own figures on the same file.
@Suite("Demo model against llama.cpp")
struct DemoModelTests {
    /// llama.cpp's perplexity of models/demo/llama-cluster-demo.q8_0.gguf on heldout.txt with n_ctx 512
    /// (models/demo/NOTICE.md; reproduced with scripts/llamacpp_oracle.py perplexity).
    static let llamaCppPerplexity = 42.08

    @Test("perplexity over heldout.txt is within 1 % of llama.cpp's")
    func perplexity() async {
        // Two minutes of arithmetic: on a thread of its own, not one of the cooperative threads.
        for failure in await runBlocking({ c in try Self.perplexityBody(c) }) { Issue.record(Comment(rawValue: failure)) }
    }

    static func perplexityBody(_ c: Checks) throws {
        let text = try String(contentsOfFile: Repo.heldout, encoding: .utf8)
        let engine = try LlamaEngine(path: Repo.demoModel, threads: 2, contextLength: 512, maxBatch: 512)
        let tokens = LlamaTokenizer(vocabulary: try Vocabulary(gguf: engine.file)).encode(text, addBOS: true)
        let result = try engine.perplexity(tokens: tokens, context: 512)
        let relative = abs(result.perplexity - Self.llamaCppPerplexity) / Self.llamaCppPerplexity
        c.expect(relative < 0.01, "perplexity \(result.perplexity) vs llama.cpp \(Self.llamaCppPerplexity)")
    }
}

@Suite("Demo model: batch and steps agree")
struct DemoBatchStepTests {
    @Test("a prompt as one batch equals feeding it token by token")
    func batchEqualsStepwise() throws {
        let tokens: [Int32] = [1, 5132, 338, 263, 19481, 310, 278, 4240, 29899, 262, 740, 29892, 13, 16159, 19737, 2061, 29918, 4373, 9037, 16159]
        let engine = try LlamaEngine(path: Repo.demoModel, threads: 2, contextLength: 64)
        let batched = try engine.evaluate(tokens, startPosition: 0, logits: .all)
        engine.reset()
        var stepwise: [Float] = []
        for (i, t) in tokens.enumerated() { stepwise += try engine.evaluate([t], startPosition: i, logits: .last) }
        let v = engine.config.vocabSize
        for p in 0..<tokens.count {
            let a = Array(batched[(p * v)..<((p + 1) * v)]), b = Array(stepwise[(p * v)..<((p + 1) * v)])
            #expect(maxAbsDifference(a, b) <= 1e-4, "position \(p): \(maxAbsDifference(a, b)), top \(argmax(a[...])) vs \(argmax(b[...]))")
        }
    }
}
