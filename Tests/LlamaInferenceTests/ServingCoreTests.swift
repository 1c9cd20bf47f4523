import Foundation
import LlamaInference
import LlamaSampling
import TestSupport
import Testing

/// The serving core (sequence table, scheduler, generation state) through the one-process
/// backend on the demo model: slots, the prompt cache, stop strings, cancellation, choices.
/// No processes, no sockets.
@Suite("Serving core", .serialized, .timeLimit(.minutes(3)))
struct ServingCoreTests {
    static let prompt: [Int32] = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 450]

    static func backend(slots: Int = 2) throws -> LocalBackend {
        let b = try LocalBackend(modelPath: Repo.demoModel, options: .init(threads: 1, slots: slots, contextLength: 512, batch: 16))
        b.start()
        return b
    }

    @Test("eight concurrent requests on two slots each get what they get alone, and every slot is free afterwards")
    func concurrency() async throws {
        let b = try Self.backend(slots: 2)
        defer { b.shutdown() }
        let jobs = (0..<8).map { i in
            CompletionJob(promptTokens: Self.prompt + [Int32(29871 + i)], parameters: i % 2 == 0 ? .greedy : .seeded(UInt64(i)), maxTokens: 10 + i)
        }
        var alone: [[Int32]] = []
        for j in jobs { alone.append(try await collect(b, j).tokens[0]) }
        let together = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, j) in jobs.enumerated() { group.addTask { (i, try await collect(b, j).tokens[0]) } }
            var out = [[Int32]](repeating: [], count: jobs.count)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        #expect(together == alone)
        #expect(zip(alone, jobs).allSatisfy { $0.count == $1.maxTokens })
        try waitUntil("slots idle") { b.slots().allSatisfy { !$0.isProcessing } }
        #expect(b.counters().requestsActive == 0 && b.counters().queueLength == 0)
    }

    @Test("a stop string ends the sequence in the step that produced it: no token is generated after it")
    func stopInScheduler() async throws {
        let b = try Self.backend(slots: 1)
        defer { b.shutdown() }
        let free = try await collect(b, CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 40))
        let text = free.texts[0]
        // A stop string from the middle of the free text.
        let words = text.split(separator: " ")
        try #require(words.count > 6)
        let stop = String(words[4])
        let before = b.counters().generatedTokensTotal
        let out = try await collect(b, CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 40, stop: [stop]))
        let generated = b.counters().generatedTokensTotal - before
        #expect(out.finish[0] == .stop)
        #expect(!out.texts[0].contains(stop))
        #expect(text.hasPrefix(out.texts[0]))
        // The generated count is the tokens up to and including the one completing the stop string.
        let cut = free.tokens[0].indices.first { i in
            b.detokenize(Array(free.tokens[0][...i])).contains(stop)
        }
        #expect(generated == (cut.map { $0 + 1 } ?? -1), "tokens generated: \(generated)")
        // The status snapshot is published after the scheduler's turn: it shows the free slot within a turn.
        try waitUntil("slot free after the stop", timeout: 1) { b.slots().allSatisfy { !$0.isProcessing } }
    }

    @Test("a cancelled stream frees its slot for the next request at once")
    func cancellation() async throws {
        let b = try Self.backend(slots: 1)
        defer { b.shutdown() }
        let task = Task {
            var n = 0
            for try await event in try b.submit(CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 480)) {
                if case .text = event { n += 1 }
                if n == 3 { break }
            }
            return n
        }
        #expect(try await task.value == 3)
        try waitUntil("slot free after cancellation", timeout: 5) { b.slots().allSatisfy { !$0.isProcessing } }
        // Stopped long before its 480 tokens (the margin covers a loaded machine).
        #expect(b.counters().generatedTokensTotal < 240)
        #expect(b.counters().requestsActive == 0)
        let next = try await collect(b, CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 5))
        #expect(next.tokens[0].count == 5)
    }

    @Test("the prompt cache reuses an idle slot's prefix and gives the same tokens")
    func promptCache() async throws {
        let b = try Self.backend(slots: 2)
        defer { b.shutdown() }
        let first = try await collect(b, CompletionJob(promptTokens: Self.prompt, parameters: .greedy, maxTokens: 8))
        let cachedBefore = b.counters().promptTokensCached
        let again = try await collect(b, CompletionJob(promptTokens: Self.prompt + [29892], parameters: .greedy, maxTokens: 8))
        #expect(b.counters().promptTokensCached - cachedBefore >= Self.prompt.count - 1)
        var nocache = CompletionJob(promptTokens: Self.prompt + [29892], parameters: .greedy, maxTokens: 8)
        nocache.cachePrompt = false
        let cold = try await collect(b, nocache)
        #expect(again.tokens == cold.tokens)
        #expect(first.tokens[0].count == 8)
    }

    @Test("n choices share the prompt, differ by seed and each equal a single request with that choice's seed")
    func choices() async throws {
        let b = try Self.backend(slots: 3)
        defer { b.shutdown() }
        var job = CompletionJob(promptTokens: Self.prompt, parameters: .seeded(5), maxTokens: 12)
        job.choices = 3
        let out = try await collect(b, job)
        #expect(out.tokens.count == 3)
        #expect(Set(out.tokens).count > 1, "three seeds, three texts")
        #expect(out.finish.allSatisfy { $0 == .length })
        for i in 0..<3 {
            let single = try await collect(b, CompletionJob(promptTokens: Self.prompt, parameters: .seeded(5 + UInt64(i)), maxTokens: 12))
            #expect(single.tokens[0] == out.tokens[i], "choice \(i) is the request with seed 5 + \(i)")
        }
    }
}
