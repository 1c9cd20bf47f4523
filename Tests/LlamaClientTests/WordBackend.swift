import TestSupport
import Foundation
import LlamaInference
import LlamaServer

/// A model runner for client tests: byte tokens (id = byte + 3) and a fixed list of words
/// generated one token each.
///
/// `@unchecked Sendable`: the logs (`terminationLog`, `jobLog`) are read and written only while
/// holding `lock`; everything else is immutable after `init`.
final class WordBackend: CompletionBackend, @unchecked Sendable {
    private let lock = NSLock()
    private var terminationLog: [String] = []
    private var jobLog: [CompletionJob] = []

    let words: [String]
    /// After the words, wait (up to 3 s) for cancellation instead of finishing.
    let hangAfterWords: Bool
    /// Fail with this message after the words instead of finishing.
    let failureMessage: String?
    /// Pause between tokens, in nanoseconds.
    let tokenDelay: UInt64
    /// Standbys after the two workers in the health report.
    let standbys: [WorkerStatus]
    /// The health report's `draining` and `insecure`.
    let draining: Bool
    let insecure: Bool

    let info = ModelInfo(name: "word-llama", path: "/models/word.gguf", contextLength: 512, bosID: 1, eosID: 2,
                         vocabularySize: 259, slotCount: 4)
    var bosID: Int32 { info.bosID }
    let stageSummary = "w1 0-11, w2 12-21"

    init(words: [String], hangAfterWords: Bool = false, failureMessage: String? = nil, tokenDelay: UInt64 = 0,
         standbys: [WorkerStatus] = [], draining: Bool = false, insecure: Bool = false) {
        self.words = words
        self.hangAfterWords = hangAfterWords
        self.failureMessage = failureMessage
        self.tokenDelay = tokenDelay
        self.standbys = standbys
        self.draining = draining
        self.insecure = insecure
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    var terminations: [String] {
        lock.lock()
        defer { lock.unlock() }
        return terminationLog
    }

    var jobs: [CompletionJob] {
        lock.lock()
        defer { lock.unlock() }
        return jobLog
    }

    /// Waits (at most 5 s) until `count` job streams have terminated. It sleeps as a task, so
    /// the server's tasks (which end the streams) keep the cooperative threads meanwhile.
    func waitForTerminations(_ count: Int) async -> [String] {
        for _ in 0 ..< 500 where terminations.count < count {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return terminations
    }

    func tokenize(_ text: String, addBOS: Bool) -> [Int32] {
        (addBOS ? [bosID] : []) + text.utf8.map { Int32($0) + 3 }
    }

    func detokenize(_ ids: [Int32]) -> String {
        String(decoding: ids.filter { $0 >= 3 && $0 < 259 }.map { UInt8($0 - 3) }, as: UTF8.self)
    }

    func piece(_ id: Int32) -> [UInt8] { id >= 3 && id < 259 ? [UInt8(id - 3)] : [] }
    func specialTokenID(_ text: String) -> Int32? { nil }

    func submit(_ job: CompletionJob) throws -> AsyncThrowingStream<CompletionEvent, Error> {
        let job = try JobLimits(contextLength: 512, vocabularySize: 259, slotCount: 4).validate(job)
        let limit = job.maxTokens ?? 512
        lock.lock()
        jobLog.append(job)
        lock.unlock()
        let (stream, continuation) = AsyncThrowingStream<CompletionEvent, Error>.makeStream()
        let words = self.words, hang = hangAfterWords, failure = failureMessage, delay = tokenDelay
        let producer = Task {
            var emitted = 0
            var release = TextRelease(stopStrings: job.stop)
            for (index, word) in words.enumerated() where emitted < limit && !release.isStopped {
                if delay > 0 { try? await Task.sleep(nanoseconds: delay) }
                if Task.isCancelled { return }
                let out = release.append(TokenLogprob(token: Int32(300 + index), bytes: Array(word.utf8), logprob: nil))
                if !out.text.isEmpty { continuation.yield(.text(choice: 0, out.text, tokens: out.tokens)) }
                emitted += 1
            }
            let rest = release.finish()
            if !rest.text.isEmpty { continuation.yield(.text(choice: 0, rest.text, tokens: rest.tokens)) }
            if let failure {
                continuation.finish(throwing: Failure(description: failure))
                return
            }
            if hang && emitted < limit && !release.isStopped {
                // Wait to be cancelled, but not forever: a job that is never cancelled
                // finishes after 3 s, so a broken cancellation fails the test instead of hanging it.
                for _ in 0 ..< 600 where !Task.isCancelled { try? await Task.sleep(nanoseconds: 5_000_000) }
                if Task.isCancelled { return }
            }
            continuation.yield(.finished(choice: 0, emitted < limit || release.isStopped ? .stop : .length, completionTokens: emitted))
            continuation.finish()
        }
        continuation.onTermination = { [self] termination in
            producer.cancel()
            lock.lock()
            if case .cancelled = termination { terminationLog.append("cancelled") } else { terminationLog.append("finished") }
            lock.unlock()
        }
        return stream
    }

    func health() -> HealthReport {
        HealthReport(ready: true, workers: [
            WorkerStatus(name: "w1", state: "ready", layers: "0-11", threads: 4, address: "tcp://127.0.0.1:7001",
                         tokensProcessed: 640, tokensPerSecond: 21.25, secondsSinceHeartbeat: 0.5),
            WorkerStatus(name: "w2", state: "loading", layers: "12-21"),
        ] + standbys, draining: draining, insecure: insecure)
    }

    func slots() -> [SlotStatus] { [] }

    func counters() -> BackendCounters {
        var metrics = BackendCounters()
        metrics.requestsTotal = 9
        metrics.requestsFailed = 1
        metrics.promptTokensTotal = 300
        metrics.generatedTokensTotal = 200
        metrics.tokensPerSecond = 15.5
        return metrics
    }
}
