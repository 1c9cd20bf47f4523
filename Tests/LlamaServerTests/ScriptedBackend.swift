import Foundation
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
    private var _metrics = BackendMetrics()
    private var _tokenizedTexts: [String] = []
    private var _jobs: [CompletionJob] = []
    private var _terminations: [String] = []

    let modelName = "scripted-llama"
    let contextLength: Int
    let bosID: Int32 = 1
    let eosID: Int32 = 2
    let vocabularySize: Int? = 259

    init(script: [String] = ScriptedBackend.words, contextLength: Int = 256) {
        _script = script
        self.contextLength = contextLength
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
    var metricsValue: BackendMetrics {
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

    func submit(_ job: CompletionJob) -> AsyncThrowingStream<CompletionEvent, Error> {
        let (script, hang, failAfter, failure) = locked { () -> ([String], Bool, Int?, any Error) in
            _jobs.append(job)
            return (_script, _hangAfterScript, _failAfter, _failure)
        }
        let (stream, continuation) = AsyncThrowingStream<CompletionEvent, Error>.makeStream()
        let producer = Task {
            var emitted = 0
            for (index, piece) in script.enumerated() where emitted < job.maxTokens {
                if let failAfter, emitted == failAfter {
                    continuation.finish(throwing: failure)
                    return
                }
                if Task.isCancelled { return }
                continuation.yield(.token(id: Int32(1000 + index), text: piece))
                emitted += 1
                await Task.yield()
            }
            if let failAfter, emitted == failAfter {
                continuation.finish(throwing: failure)
                return
            }
            if hang && emitted < job.maxTokens {
                // Wait to be cancelled, but not forever: a job that is never cancelled
                // finishes after 3 s, so a broken cancellation fails the test instead of hanging it.
                for _ in 0 ..< 600 where !Task.isCancelled { try? await Task.sleep(nanoseconds: 5_000_000) }
                if Task.isCancelled { return }
            }
            continuation.yield(.finished(emitted < job.maxTokens ? .stop : .length,
                                         promptTokens: job.promptTokens.count, completionTokens: emitted))
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

    func health() -> (ready: Bool, workers: [WorkerStatus]) {
        locked { (_ready, _workers) }
    }

    func metrics() -> BackendMetrics {
        locked { _metrics }
    }
}
