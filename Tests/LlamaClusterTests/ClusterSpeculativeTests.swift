import Foundation
import GGUF
import LlamaModel
import LlamaCoordinator
import LlamaInference
import LlamaSampling
import TestSupport
import Testing

/// Speculation through the pipeline: one frame carries a sequence's last token and its draft
/// through every worker; rejected drafts' keys and values are overwritten on every worker.
@Suite("Speculative decoding through the pipeline", .serialized, .timeLimit(.minutes(3)))
struct ClusterSpeculativeTests {
    @Test("three workers: greedy and seeded text equal the cluster without speculation, with drafts accepted and rejected")
    func pipelineSpeculation() async throws {
        let plain = try TestCluster(workers: ["w1", "w2", "w3"])
        defer { plain.stop() }
        let spec = try TestCluster(workers: ["w1", "w2", "w3"], speculative: SpeculativeSettings(ngram: 2, maxDraft: 6))
        defer { spec.stop() }
        for c in [plain, spec] {
            for w in ["w1", "w2", "w3"] { try c.startWorker(w) }
            try c.waitReady()
        }
        let code = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n"
        let prompts = [plain.coordinator.tokenize(code, addBOS: true), plain.coordinator.tokenize("The os module provides", addBOS: true)]
        for prompt in prompts {
            for parameters in [SamplingParameters.greedy, .seeded(7)] {
                let a = try await plain.complete(prompt, maxTokens: 60, parameters: parameters)
                let b = try await spec.complete(prompt, maxTokens: 60, parameters: parameters)
                #expect(a == b, "\(parameters)")
            }
        }
        // Concurrent sequences share frames with their drafts.
        let jobs: [([Int32], Int)] = prompts.flatMap { p -> [([Int32], Int)] in [(p, 40), (p + [Int32(29871)], 40)] }
        let together = try await spec.completeAloneThenTogether(jobs)
        #expect(together.alone == together.together)
        try waitUntil("the draft counters", timeout: 5) { spec.coordinator.counters().draftedTokens > 0 }
        let counters = spec.coordinator.counters()
        #expect(counters.acceptedDraftTokens > 0 && counters.acceptedDraftTokens < counters.draftedTokens,
                "\(counters.acceptedDraftTokens) of \(counters.draftedTokens) drafted tokens accepted")
    }
}

extension ClusterSpeculativeTests {
    @Test("three workers with a draft model on the coordinator: the text of the cluster without speculation")
    func pipelineDraftModel() async throws {
        let directory = try TemporaryDirectory()
        let draft = directory.file("draft.gguf")
        try writeFirstLayers(of: try GGUFFile(path: Repo.demoModel), layers: 2, to: draft)
        let plain = try TestCluster(workers: ["w1", "w2", "w3"])
        defer { plain.stop() }
        let spec = try TestCluster(workers: ["w1", "w2", "w3"],
                                   speculative: SpeculativeSettings(ngram: 0, maxDraft: 5, draftModel: draft, draftMinProbability: 0.3))
        defer { spec.stop() }
        for c in [plain, spec] {
            for w in ["w1", "w2", "w3"] { try c.startWorker(w) }
            try c.waitReady()
        }
        for text in ["The os module provides", "Q: What is the meaning of life?\nA:"] {
            let prompt = plain.coordinator.tokenize(text, addBOS: true)
            for parameters in [SamplingParameters.greedy, .seeded(11)] {
                let a = try await plain.complete(prompt, maxTokens: 48, parameters: parameters)
                let b = try await spec.complete(prompt, maxTokens: 48, parameters: parameters)
                #expect(a == b, "\(parameters)")
            }
        }
        try waitUntil("the draft counters", timeout: 5) { spec.coordinator.counters().draftedTokens > 0 }
        let counters = spec.coordinator.counters()
        #expect(counters.acceptedDraftTokens > 0 && counters.acceptedDraftTokens < counters.draftedTokens,
                "\(counters.acceptedDraftTokens) of \(counters.draftedTokens) drafted tokens accepted")
    }
}
