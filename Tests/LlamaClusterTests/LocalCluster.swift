import ClusterTransport
import Foundation
import LlamaCluster
import LlamaModel
import LlamaSampling
import LlamaServer
import Logging

enum Repo {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let demoModel = root.appendingPathComponent("models/demo/llama-cluster-demo.q8_0.gguf").path
}

struct Timeout: Error, CustomStringConvertible {
    let description: String
}

/// A coordinator and workers in this process, on loopback with free ports.
final class LocalCluster: @unchecked Sendable {
    let coordinator: Coordinator
    private(set) var workers: [String: ClusterWorker] = [:]
    private var done: [String: DispatchSemaphore] = [:]
    let controlAddress: String
    let cacheDirectory: String

    init(model: String = Repo.demoModel, workers names: [String], layers: [String?]? = nil,
         activations: ActivationType = .f32, maxSequences: Int = 4, heartbeatTimeout: Double = 2,
         batch: Int = 64, framesInFlight: Int? = nil, kvCache: KVCacheType = .f16) throws {
        controlAddress = try LoopbackPort.freeEndpoint()
        cacheDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("llamacluster-cache-\(UUID().uuidString)").path
        let specs = names.enumerated().map { i, n in
            ClusterManifest.Worker(name: n, layers: layers?[i].map { s -> Range<Int> in
                let p = s.split(separator: "-").map { Int($0)! }
                return p[0]..<(p[1] + 1)
            }, threads: 1)
        }
        let manifest = ClusterManifest(model: model, controlAddress: controlAddress, httpHost: "127.0.0.1", httpPort: 0,
                                       coordinatorThreads: 1, activations: activations, maxSequences: maxSequences,
                                       context: 512, heartbeatTimeout: heartbeatTimeout, batch: batch,
                                       framesInFlight: framesInFlight, kvCache: kvCache, workers: specs)
        var logger = Logger(label: "test-coordinator")
        logger.logLevel = ProcessInfo.processInfo.environment["LLAMA_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        coordinator = try Coordinator(manifest: manifest, logger: logger)
        try coordinator.start()
    }

    /// Starts a worker thread (again, after `kill`, to rejoin under the same name).
    func startWorker(_ name: String, model: String? = Repo.demoModel) throws {
        var options = WorkerOptions(coordinator: controlAddress, name: name, threads: 1, modelPath: model,
                                    cacheDirectory: cacheDirectory, memoryBudget: 1 << 30, listen: "tcp://127.0.0.1:0",
                                    advertiseHost: "127.0.0.1", heartbeatInterval: 0.2)
        options.listen = "tcp://127.0.0.1:0"
        var logger = Logger(label: "test-\(name)")
        logger.logLevel = ProcessInfo.processInfo.environment["LLAMA_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        let worker = try ClusterWorker(options: options, logger: logger)
        let sem = DispatchSemaphore(value: 0)
        workers[name] = worker
        done[name] = sem
        let t = Thread {
            do { try worker.run() } catch { FileHandle.standardError.write(Data("worker \(name): \(error)\n".utf8)) }
            sem.signal()
        }
        t.stackSize = 8 << 20
        t.start()
    }

    /// Stops a worker abruptly: it stops answering, as if its host went away.
    func kill(_ name: String) {
        workers[name]?.stop()
        done[name]?.wait()
        workers[name] = nil
        done[name] = nil
    }

    func waitReady(timeout: Double = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if coordinator.health().ready { return }
            usleep(20_000)
        }
        throw Timeout(description: "cluster not ready after \(timeout) s: \(coordinator.health().workers)")
    }

    func stop() {
        for name in Array(workers.keys) { kill(name) }
        coordinator.shutdown()
        try? FileManager.default.removeItem(atPath: cacheDirectory)
    }

    /// Runs a job to the end and returns its tokens, or throws the stream's error.
    func complete(_ prompt: [Int32], maxTokens: Int, parameters: SamplingParameters = .greedy) async throws -> [Int32] {
        var tokens: [Int32] = []
        for try await event in coordinator.submit(CompletionJob(promptTokens: prompt, parameters: parameters, maxTokens: maxTokens)) {
            if case .token(let id, _) = event, id >= 0 { tokens.append(id) }
        }
        return tokens
    }

    /// Runs the jobs one after another, then all at once; returns both results in job order.
    func completeAloneThenTogether(_ jobs: [([Int32], Int)]) async throws -> (alone: [[Int32]], together: [[Int32]]) {
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

extension SamplingParameters {
    static var greedy: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = 0
        return p
    }
}

/// Greedy tokens from one process on the same model, for comparison.
func singleProcessTokens(_ prompt: [Int32], maxTokens: Int, model: String = Repo.demoModel,
                         kvCache: KVCacheType = .f16) throws -> [Int32] {
    let engine = try LlamaEngine(path: model, threads: 1, contextLength: 512, kvCache: kvCache)
    return try engine.generate(promptTokens: prompt, parameters: .greedy, maxTokens: maxTokens) { _ in true }.tokens
}

import GGUF
import LlamaTokenizer

/// A tokenizer loaded from a model file, decoding generated text as a stream does.
struct LlamaTokenizerBox {
    let tokenizer: LlamaTokenizer
    init(path: String) throws {
        tokenizer = LlamaTokenizer(vocabulary: try Vocabulary(gguf: try GGUFFile(path: path)))
    }
    func decodeContinuation(_ ids: [Int32]) -> String {
        var d = tokenizer.makeStreamingDecoder(startsText: false)
        var s = ""
        for id in ids { s += d.append(id) }
        return s + d.finish()
    }
}
