import TestSupport
import Foundation
import LlamaInference
import LlamaSampling
import LlamaServer

/// A model runner for tests: a byte-level tokenizer (token id = byte + 3, with 1 = BOS and
/// 2 = EOS) and a scripted generation that emits fixed pieces of text as tokens.
final class ScriptedBackend: CompletionBackend, @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private let lock = NSLock()
    private var _script: [String]
    private var _hangAfterScript = false
    private var _failAfter: Int?
    private var _failure: any Error = Failure(description: "worker w2 stopped answering")
    private var _ready = true
    private var _workers: [WorkerStatus] = [
        WorkerStatus(name: "w1", state: "ready", layers: "0-15", threads: 2, address: "tcp://10.0.0.1:5555",
                     tokensProcessed: 120, tokensPerSecond: 12.5, secondsSinceHeartbeat: 0.4),
        WorkerStatus(name: "w2", state: "ready", layers: "16-31", threads: 2, tokensProcessed: 118,
                     tokensPerSecond: 11.75),
    ]
    private var _metrics = BackendCounters()
    private var _tokenizedTexts: [String] = []
    private var _jobs: [CompletionJob] = []
    private var _terminations: [String] = []

    let info: ModelInfo
    var bosID: Int32 { info.bosID }
    var eosID: Int32 { info.eosID }
    var contextLength: Int { info.contextLength }
    let stageSummary = "w1 0-15, w2 16-31"

    init(script: [String] = ScriptedBackend.words, contextLength: Int = 256, chatTemplate: String? = nil) {
        _script = script
        info = ModelInfo(name: "scripted-llama", path: "/models/scripted.gguf", contextLength: contextLength, bosID: 1, eosID: 2,
                         vocabularySize: 259, slotCount: 4, chatTemplate: chatTemplate)
    }

    /// Twenty pieces: " one two ... twenty" with a comma after "five" and a full stop after "ten".
    static let words = [
        " one", " two", " three", " four", " five", ",", " six", " seven", " eight", " nine", " ten", ".",
        " eleven", " twelve", " thirteen", " fourteen", " fifteen", " sixteen", " seventeen", " eighteen",
    ]

    private func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    // MARK: Test controls and records

    var script: [String] {
        get { locked { _script } }
        set { locked { _script = newValue } }
    }
    /// After the script, wait (up to 3 s) for cancellation instead of finishing.
    var hangAfterScript: Bool {
        get { locked { _hangAfterScript } }
        set { locked { _hangAfterScript = newValue } }
    }
    /// Throw ``failure`` after this many tokens.
    var failAfter: Int? {
        get { locked { _failAfter } }
        set { locked { _failAfter = newValue } }
    }
    /// The error thrown after ``failAfter`` tokens.
    var failure: any Error {
        get { locked { _failure } }
        set { locked { _failure = newValue } }
    }
    var ready: Bool {
        get { locked { _ready } }
        set { locked { _ready = newValue } }
    }
    var workers: [WorkerStatus] {
        get { locked { _workers } }
        set { locked { _workers = newValue } }
    }
    var metricsValue: BackendCounters {
        get { locked { _metrics } }
        set { locked { _metrics = newValue } }
    }
    var tokenizedTexts: [String] { locked { _tokenizedTexts } }
    var jobs: [CompletionJob] { locked { _jobs } }
    /// "finished" or "cancelled" for each job whose stream has terminated.
    var terminations: [String] { locked { _terminations } }

    /// Waits (bounded) until `count` job streams have terminated.
    func waitForTerminations(_ count: Int) async -> [String] {
        for _ in 0 ..< 500 {
            let seen = terminations
            if seen.count >= count { return seen }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return terminations
    }

    // MARK: CompletionBackend

    func tokenize(_ text: String, addBOS: Bool) -> [Int32] {
        locked { _tokenizedTexts.append(text) }
        return (addBOS ? [bosID] : []) + text.utf8.map { Int32($0) + 3 }
    }

    func detokenize(_ ids: [Int32]) -> String {
        String(decoding: ids.filter { $0 >= 3 && $0 < 259 }.map { UInt8($0 - 3) }, as: UTF8.self)
    }

    func piece(_ id: Int32) -> [UInt8] { id >= 3 && id < 259 ? [UInt8(id - 3)] : [] }
    func specialTokenID(_ text: String) -> Int32? { nil }

    /// Checks the job as every backend does, then plays the script for each choice (token
    /// ids 1000, 1001, ...; stop strings cut by the same text release the real backends use).
    func submit(_ job: CompletionJob) throws -> AsyncThrowingStream<CompletionEvent, Error> {
        guard ready else {
            throw BackendError.unavailable("the cluster is not ready: \(workers.filter { $0.state != "ready" }.map(\.name).joined(separator: ", "))",
                                           retryAfter: 5)
        }
        let job = try JobLimits(contextLength: contextLength, vocabularySize: 259, slotCount: 4).validate(job)
        let (script, hang, failAfter, failure) = locked { () -> ([String], Bool, Int?, any Error) in
            _jobs.append(job)
            return (_script, _hangAfterScript, _failAfter, _failure)
        }
        let limit = job.maxTokens ?? contextLength
        let (stream, continuation) = AsyncThrowingStream<CompletionEvent, Error>.makeStream()
        let producer = Task {
            if job.echo && job.logprobs != nil {
                continuation.yield(.prompt(job.promptTokens.enumerated().map {
                    TokenLogprob(token: $1, bytes: piece($1), logprob: $0 == 0 ? nil : -1)
                }))
            }
            for choice in 0..<job.choices {
                var release = TextRelease(stopStrings: job.stop)
                var emitted = 0
                for (index, text) in script.enumerated() where emitted < limit && !release.isStopped {
                    if let failAfter, emitted == failAfter {
                        continuation.finish(throwing: failure)
                        return
                    }
                    if Task.isCancelled { return }
                    emitted += 1
                    let out = release.append(TokenLogprob(token: Int32(1000 + index), bytes: Array(text.utf8),
                                                          logprob: job.logprobs == nil ? nil : -0.5))
                    if !out.text.isEmpty || !out.tokens.isEmpty { continuation.yield(.text(choice: choice, out.text, tokens: out.tokens)) }
                    await Task.yield()
                }
                if let failAfter, emitted == failAfter {
                    continuation.finish(throwing: failure)
                    return
                }
                if hang && emitted < limit && !release.isStopped {
                    // Wait to be cancelled, but not forever: a job that is never cancelled
                    // finishes after 3 s, so a broken cancellation fails the test instead of hanging it.
                    for _ in 0 ..< 600 where !Task.isCancelled { try? await Task.sleep(nanoseconds: 5_000_000) }
                    if Task.isCancelled { return }
                }
                let rest = release.finish()
                if !rest.text.isEmpty { continuation.yield(.text(choice: choice, rest.text, tokens: rest.tokens)) }
                continuation.yield(.finished(choice: choice, emitted < limit || release.isStopped ? .stop : .length,
                                             completionTokens: emitted))
            }
            continuation.finish()
        }
        continuation.onTermination = { [weak self] termination in
            producer.cancel()
            let name: String
            switch termination {
            case .cancelled: name = "cancelled"
            case .finished: name = "finished"
            @unknown default: name = "unknown"
            }
            self?.locked { self?._terminations.append(name) }
        }
        return stream
    }

    func health() -> HealthReport {
        locked { HealthReport(ready: _ready, workers: _workers, missing: _workers.filter { $0.state != "ready" }.map(\.name)) }
    }

    func counters() -> BackendCounters { locked { _metrics } }
    func slots() -> [SlotStatus] { (0..<4).map { SlotStatus(id: $0, contextLength: contextLength, isProcessing: false, cachedTokens: 0) } }
}
