import ClusterTransport
import Foundation
import LlamaCoordinator
import LlamaInference
import LlamaModel
import LlamaSampling
import LlamaWorker
import Logging

/// A coordinator and workers inside the test process: over an ``InMemoryNetwork`` (faults
/// injected at will, no sockets) or over ZeroMQ on loopback with free ports.
public final class TestCluster: @unchecked Sendable {
    // @unchecked: `workers` and `done` are changed only by the test's own thread.
    public let coordinator: Coordinator
    public let manifest: ClusterManifest
    /// The in-memory network (nil over ZeroMQ).
    public let network: InMemoryNetwork?
    public let controlAddress: String
    public let cacheDirectory: String
    public private(set) var workers: [String: ClusterWorker] = [:]
    /// With `secure`: the coordinator's and every listed worker's CURVE keys.
    public private(set) var coordinatorKeys: CurveKeyPair?
    public private(set) var workerKeys: [String: CurveKeyPair] = [:]
    private var done: [String: DispatchSemaphore] = [:]

    /// - Parameters:
    ///   - layers: explicit ranges ("0-2") per worker, nil to balance.
    ///   - standbys: names of standby workers.
    ///   - overTCP: ZeroMQ on loopback instead of the in-memory network.
    public init(model: String = Repo.demoModel, workers names: [String], layers: [String?]? = nil, standbys: [String] = [],
                activations: ActivationType = .f32, maxSequences: Int = 4, heartbeatTimeout: Double = 2,
                recoveryTimeout: Double = 60, batch: Int = 64, framesInFlight: Int? = nil, kvCache: KVCacheType = .f16,
                speculative: SpeculativeSettings? = nil, frameTimeout: Double = 30, maxQueue: Int = 256,
                overTCP: Bool = false, secure: Bool = false) throws {
        precondition(!secure || overTCP, "CURVE needs ZeroMQ")
        if secure {
            coordinatorKeys = try CurveKeyPair.generate()
            for n in names + standbys { workerKeys[n] = try CurveKeyPair.generate() }
        }
        let network = overTCP ? nil : InMemoryNetwork()
        self.network = network
        controlAddress = overTCP ? try LoopbackPort.freeEndpoint() : "mem://coordinator"
        cacheDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("llamacluster-cache-\(UUID().uuidString)").path
        var specs = names.enumerated().map { i, n in
            ClusterManifest.Worker(name: n, layers: layers?[i].map { s -> Range<Int> in
                let p = s.split(separator: "-").map { Int($0)! }
                return p[0]..<(p[1] + 1)
            }, threads: 1)
        }
        specs += standbys.map { ClusterManifest.Worker(name: $0, threads: 1, standby: true) }
        for i in specs.indices { specs[i].key = workerKeys[specs[i].name]?.publicKey }
        manifest = ClusterManifest(model: model, controlAddress: overTCP ? controlAddress : "tcp://127.0.0.1:1",
                                   httpHost: "127.0.0.1", httpPort: 0, coordinatorThreads: 1, activations: activations,
                                   maxSequences: maxSequences, context: 512, heartbeatTimeout: heartbeatTimeout,
                                   recoveryTimeout: recoveryTimeout, maxQueue: maxQueue, frameTimeout: frameTimeout,
                                   batch: batch, framesInFlight: framesInFlight, kvCache: kvCache, speculative: speculative,
                                   securityKey: secure ? "coordinator.key" : nil, workers: specs)
        let transport: (any CoordinatorTransport)? = network.map { InMemoryCoordinatorTransport(network: $0) }
        coordinator = try Coordinator(manifest: manifest, logger: Self.logger("coordinator"), keys: coordinatorKeys, transport: transport)
        coordinator.start()
    }

    static func logger(_ label: String) -> Logger {
        var logger = Logger(label: "test-\(label)")
        logger.logLevel = Logger.Level(rawValue: testLogLevel) ?? .warning
        return logger
    }

    /// Starts a worker thread (again, after ``kill(_:)``, to rejoin under the same name).
    /// - Parameters:
    ///   - label: the handle ``kill(_:)`` takes (default: `name`), so a second process can claim a name.
    ///   - keys: CURVE keys to present instead of the manifest's for `name` (a secure cluster only).
    ///   - plain: no CURVE at all, even in a secure cluster.
    public func startWorker(_ name: String, model: String? = Repo.demoModel, label: String? = nil,
                            keys: CurveKeyPair? = nil, plain: Bool = false) throws {
        let label = label ?? name
        var options = WorkerOptions(coordinator: controlAddress, name: name, threads: 1, modelPath: model,
                                    cacheDirectory: cacheDirectory, memoryBudget: 1 << 30, listen: "tcp://127.0.0.1:0",
                                    advertiseHost: "127.0.0.1", heartbeatInterval: 0.1)
        options.heartbeatTimeout = manifest.heartbeatTimeout
        options.leaveTimeout = 20
        if !plain, let coordinatorKeys, let k = keys ?? workerKeys[name] {
            options.security = TransportSecurity(keys: k, coordinatorKey: coordinatorKeys.publicKey)
        }
        let transport: (any WorkerTransport)? = network.map { InMemoryWorkerTransport(network: $0, name: name) }
        let worker = try ClusterWorker(options: options, logger: Self.logger(name), transport: transport)
        let sem = DispatchSemaphore(value: 0)
        workers[label] = worker
        done[label] = sem
        let t = Thread {
            do { try worker.run() } catch { FileHandle.standardError.write(Data("worker \(name): \(error)\n".utf8)) }
            sem.signal()
        }
        t.stackSize = 8 << 20
        t.start()
    }

    /// Stops a worker abruptly: it stops answering, as if its host went away.
    public func kill(_ name: String) {
        workers[name]?.stop()
        done[name]?.wait()
        workers[name] = nil
        done[name] = nil
    }

    /// Asks a worker to leave gracefully and waits until it has.
    public func leave(_ name: String) {
        workers[name]?.leave()
        done[name]?.wait()
        workers[name] = nil
        done[name] = nil
    }

    public func waitReady(timeout: Double = 60) throws {
        try waitUntil("the cluster being ready (\(coordinator.health().workers))", timeout: timeout) { coordinator.health().ready }
    }

    public func stop() {
        for name in Array(workers.keys) { kill(name) }
        coordinator.shutdown()
        try? FileManager.default.removeItem(atPath: cacheDirectory)
    }

    /// Runs a job to the end and returns each choice's tokens, or throws the stream's error.
    public func run(_ job: CompletionJob) async throws -> [[Int32]] {
        try await collect(coordinator, job).tokens
    }

    /// Greedy (or `parameters`) tokens of one completion.
    public func complete(_ prompt: [Int32], maxTokens: Int, parameters: SamplingParameters = .greedy,
                         stop: [String] = []) async throws -> [Int32] {
        try await run(CompletionJob(promptTokens: prompt, parameters: parameters, maxTokens: maxTokens, stop: stop))[0]
    }

    /// Runs the jobs one after another, then all at once; returns both results in job order.
    public func completeAloneThenTogether(_ jobs: [([Int32], Int)]) async throws -> (alone: [[Int32]], together: [[Int32]]) {
        var alone: [[Int32]] = []
        for (p, n) in jobs { alone.append(try await complete(p, maxTokens: n)) }
        let together = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, (p, n)) in jobs.enumerated() {
                group.addTask { (i, try await self.complete(p, maxTokens: n)) }
            }
            var out = [[Int32]](repeating: [], count: jobs.count)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        return (alone, together)
    }
}

/// What a job produced: each choice's tokens, text and finish reason, and the prompt's
/// log-probabilities (echo).
public struct JobOutput: Sendable {
    public var tokens: [[Int32]]
    public var texts: [String]
    public var logprobs: [[TokenLogprob]]
    public var finish: [FinishReason?]
    public var prompt: [TokenLogprob]
}

/// Runs `job` on `backend` and gathers its events; throws ``Timeout`` (and cancels the job) when
/// the stream has not ended within `timeout` seconds, so a stuck cluster fails a test with a
/// message instead of hanging it.
public func collect(_ backend: any CompletionBackend, _ job: CompletionJob, timeout: Double = 120) async throws -> JobOutput {
    try await withThrowingTaskGroup(of: JobOutput?.self) { group in
        group.addTask { try await gather(backend, job) }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let out = first else {
            throw Timeout(description: "a job of \(job.promptTokens.count) prompt tokens did not end within \(timeout) s")
        }
        return out
    }
}

private func gather(_ backend: any CompletionBackend, _ job: CompletionJob) async throws -> JobOutput {
    var out = JobOutput(tokens: .init(repeating: [], count: job.choices), texts: .init(repeating: "", count: job.choices),
                        logprobs: .init(repeating: [], count: job.choices), finish: .init(repeating: nil, count: job.choices),
                        prompt: [])
    for try await event in try backend.submit(job) {
        switch event {
        case let .prompt(t): out.prompt = t
        case let .text(c, text, tokens):
            out.texts[c] += text
            out.tokens[c] += tokens.map(\.token)
            out.logprobs[c] += tokens
        case let .finished(c, reason, _): out.finish[c] = reason
        }
    }
    return out
}

extension SamplingParameters {
    /// Temperature 0.8 with the default filters and `seed`.
    public static func seeded(_ seed: UInt64) -> SamplingParameters {
        var p = SamplingParameters()
        p.seed = seed
        return p
    }
}

/// Tokens from one process (``LocalBackend``) on the same model, for comparison.
public func singleProcessTokens(_ prompt: [Int32], maxTokens: Int, model: String = Repo.demoModel,
                                kvCache: KVCacheType = .f16, parameters: SamplingParameters = .greedy) async throws -> [Int32] {
    let backend = try LocalBackend(modelPath: model, options: .init(threads: 1, slots: 1, contextLength: 512, kvCache: kvCache))
    backend.start()
    defer { backend.shutdown() }
    return try await collect(backend, CompletionJob(promptTokens: prompt, parameters: parameters, maxTokens: maxTokens)).tokens[0]
}
