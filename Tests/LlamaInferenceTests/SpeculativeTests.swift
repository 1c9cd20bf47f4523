import Foundation
import LlamaInference
import LlamaSampling
import TestSupport
import Testing

/// Speculative decoding by prompt lookup on the demo model: the text is exactly what one
/// token per frame gives (greedy and seeded), with drafts accepted and rejected, at the end of
/// the context and with a stop string inside a draft, and the KV cache a rejected draft leaves
/// behind gives the same tokens as a fresh computation.
@Suite("Speculative decoding", .serialized, .timeLimit(.minutes(3)))
struct SpeculativeTests {
    static let settings = SpeculativeSettings(ngram: 2, maxDraft: 6)

    static func backend(speculative: SpeculativeSettings?, slots: Int = 1) throws -> LocalBackend {
        let b = try LocalBackend(modelPath: Repo.demoModel, options: .init(threads: 1, slots: slots, contextLength: 512, batch: 32,
                                                                            speculative: speculative))
        b.start()
        return b
    }

    /// Code with repeated structure (drafts that are accepted) and ordinary prose (drafts that are mostly rejected).
    static let prompts = [
        "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n\ndef div(a, b):\n",
        "import os\nimport sys\nimport re\nimport json\nimport time\nimport",
        "Q: What is the meaning of life?\nA:",
        "The os module provides",
    ]

    /// Every prompt, greedy and seeded (seed `seedBase + i` for prompt i): `spec` gives `plain`'s
    /// tokens and finish.
    static func expectSameText(_ plain: LocalBackend, _ spec: LocalBackend, seedBase: UInt64, maxTokens: Int) async throws {
        for (i, text) in prompts.enumerated() {
            let tokens = plain.tokenize(text, addBOS: true)
            for parameters in [SamplingParameters.greedy, .seeded(seedBase + UInt64(i))] {
                let job = CompletionJob(promptTokens: tokens, parameters: parameters, maxTokens: maxTokens)
                let a = try await collect(plain, job), b = try await collect(spec, job)
                #expect(a.tokens == b.tokens, "prompt \(i), \(parameters)")
                #expect(a.finish == b.finish)
            }
        }
    }

    @Test("greedy and seeded text equal one token per frame; some drafts are accepted and some rejected")
    func equalText() async throws {
        let plain = try Self.backend(speculative: nil)
        defer { plain.shutdown() }
        let spec = try Self.backend(speculative: Self.settings)
        defer { spec.shutdown() }
        try await Self.expectSameText(plain, spec, seedBase: 40, maxTokens: 64)
        try waitUntil("the draft counters", timeout: 5) { spec.counters().draftedTokens > 0 }
        let c = spec.counters()
        #expect(c.draftedTokens > 0 && c.acceptedDraftTokens > 0, "drafts were made and some accepted: \(c.draftedTokens)/\(c.acceptedDraftTokens)")
        #expect(c.acceptedDraftTokens < c.draftedTokens, "some drafts were rejected")
        #expect(plain.counters().draftedTokens == 0)
        // "speculative": false in a request turns it off for that request.
        let before = spec.counters().draftedTokens
        let off = CompletionJob(promptTokens: plain.tokenize(Self.prompts[0], addBOS: true), parameters: .greedy, maxTokens: 32,
                                speculative: false)
        _ = try await collect(spec, off)
        #expect(spec.counters().draftedTokens == before)
    }

    @Test("drafts adapt: prose whose drafts are rejected stops drafting for a while, code keeps drafting; the text is unchanged")
    func adaptiveDrafting() async throws {
        let plain = try Self.backend(speculative: nil)
        defer { plain.shutdown() }
        let spec = try Self.backend(speculative: SpeculativeSettings(ngram: 2, maxDraft: 8))
        defer { spec.shutdown() }
        func run(_ text: String) async throws -> (drafted: Int, accepted: Int) {
            let before = spec.counters()
            let job = CompletionJob(promptTokens: plain.tokenize(text, addBOS: true), parameters: .greedy, maxTokens: 96)
            let a = try await collect(plain, job), b = try await collect(spec, job)
            #expect(a.tokens == b.tokens)
            try waitUntil("the counters", timeout: 5) { spec.counters().generatedTokensTotal >= before.generatedTokensTotal + b.tokens[0].count }
            let after = spec.counters()
            return (after.draftedTokens - before.draftedTokens, after.acceptedDraftTokens - before.acceptedDraftTokens)
        }
        // Prompt lookup on prose finds matches the model does not follow. Each wholly rejected
        // draft pauses drafting for 1, 2, 4, 8, 16, 16... steps and limits the next draft to one
        // token more than was accepted, so over 96 steps few tokens are wasted.
        let prose = try await run(Self.prose)
        #expect(prose.drafted - prose.accepted <= 24, "prose: \(prose.accepted) of \(prose.drafted) drafted tokens accepted")
        // Code with repeated structure: drafts are accepted, and whole ones grow the next draft.
        let code = try await run(Self.prompts[0])
        #expect(code.drafted >= 16 && code.accepted * 2 >= code.drafted, "code: \(code.accepted) of \(code.drafted) accepted")
    }

    /// Prose whose repeated words invite drafts the model does not follow.
    static let prose = """
        The history of the city begins with a small village on the bank of the river, where the farmers and the \
        fishermen of the river traded their goods at the market of the village. Over the years the market of the village grew, and
        """

    @Test("at the end of the context and with a stop string inside a draft, the same text and finish")
    func edges() async throws {
        let plain = try Self.backend(speculative: nil)
        defer { plain.shutdown() }
        let spec = try Self.backend(speculative: Self.settings)
        defer { spec.shutdown() }
        // A repetitive prompt that leaves 20 positions of the 512-position context.
        var long = plain.tokenize(Self.prompts[0], addBOS: true)
        while long.count < 492 { long += long[1...].prefix(492 - long.count) }
        let end = CompletionJob(promptTokens: long, parameters: .greedy, maxTokens: 100)
        let a = try await collect(plain, end), b = try await collect(spec, end)
        #expect(a.tokens == b.tokens)
        #expect(a.tokens[0].count == 20 && a.finish == b.finish, "\(a.tokens[0].count) \(String(describing: a.finish))")

        // A stop string taken from the middle of the text a draft would have produced.
        let tokens = plain.tokenize(Self.prompts[0], addBOS: true)
        let free = try await collect(plain, CompletionJob(promptTokens: tokens, parameters: .greedy, maxTokens: 48))
        let text = free.texts[0]
        try #require(text.count > 40)
        let stop = String(text.dropFirst(text.count / 2).prefix(5))
        let stopped = CompletionJob(promptTokens: tokens, parameters: .greedy, maxTokens: 48, stop: [stop])
        let c = try await collect(plain, stopped), d = try await collect(spec, stopped)
        #expect(c.texts == d.texts && c.tokens == d.tokens)
        #expect(c.finish[0] == .stop && d.finish[0] == .stop)
        #expect(!d.texts[0].contains(stop))
    }

    @Test("after rejected drafts, reusing the slot's cache gives the tokens a fresh computation gives")
    func rollback() async throws {
        let spec = try Self.backend(speculative: Self.settings)
        defer { spec.shutdown() }
        let fresh = try Self.backend(speculative: nil)
        defer { fresh.shutdown() }
        let base = spec.tokenize(Self.prompts[0], addBOS: true)
        let first = try await collect(spec, CompletionJob(promptTokens: base, parameters: .greedy, maxTokens: 40))
        // The counters are published after the scheduler's turn.
        try waitUntil("the draft counters", timeout: 5) { spec.counters().draftedTokens > 0 }
        #expect(spec.counters().acceptedDraftTokens < spec.counters().draftedTokens, "the run rejected drafts")
        // The same prompt plus what was generated, and more: the cached prefix (with whatever
        // rejected drafts wrote past it) is reused; the tokens must be those of a fresh run.
        let next = base + first.tokens[0] + spec.tokenize("\ndef", addBOS: false)
        let cached = try await collect(spec, CompletionJob(promptTokens: next, parameters: .greedy, maxTokens: 40))
        let recomputed = try await collect(fresh, CompletionJob(promptTokens: next, parameters: .greedy, maxTokens: 40, cachePrompt: false))
        #expect(cached.tokens == recomputed.tokens)
        try waitUntil("the cached-token counter", timeout: 5) { spec.counters().promptTokensCached > 0 }
    }
}
