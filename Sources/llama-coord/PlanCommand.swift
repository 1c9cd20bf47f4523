import ArgumentParser
import Foundation
import GGUF
import LlamaCoordinator
import LlamaKernels
import LlamaModel

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the layers each worker of a manifest would get and the speed to expect, before anything starts.",
        discussion: """
            Workers without an explicit range share layers so that every stage takes about the same \
            time, within their memory, as the coordinator does once they have joined. A worker's \
            seconds per layer come from --speed, or else are measured here: one of the model's own \
            layers, run on this machine at the worker's thread count (as if the worker were this \
            machine). Memory comes from --memory (default: what this machine has available).
            """)

    @Option(help: "The cluster manifest.") var manifest: String
    @Option(help: "A worker's milliseconds per layer for one decoded token, NAME=MS (repeatable).") var speed: [String] = []
    @Option(help: "A worker's memory in MiB, NAME=MiB (repeatable).") var memory: [String] = []
    @Option(help: "One-way latency of each hop in milliseconds.") var hopMs = 0.1

    func run() throws {
        let m = try loadManifest(manifest)
        let file = try GGUFFile(path: m.model)
        let config = try LlamaConfig(gguf: file)
        let layerBytes = file.tensors.filter { $0.name.hasPrefix("blk.0.") }.reduce(0) { $0 + $1.byteCount }
        let names = Set(m.workers.map(\.name))
        var speeds = try Self.pairs(speed, option: "--speed", names: names).mapValues { StageSpeed(secondsPerLayer: $0 / 1000) }
        let memoryMiB = try Self.pairs(memory, option: "--memory", names: names)
        let available = Int(ProcessInfo.processInfo.physicalMemory)
        var memoryBytes: [String: Int] = [:]
        for w in m.workers { memoryBytes[w.name] = memoryMiB[w.name].map { Int($0 * 1_048_576) } ?? available }
        var measured: [Int: Double] = [:]
        for w in m.stages where speeds[w.name] == nil {
            let threads = w.threads ?? defaultThreadCount
            if measured[threads] == nil { measured[threads] = try Self.timeOneLayer(file: file, config: config, threads: threads) }
            speeds[w.name] = StageSpeed(secondsPerLayer: measured[threads]!)
        }
        let plan = try m.plan(layerCount: config.layerCount, layerBytes: layerBytes, speed: speeds, memory: memoryBytes,
                              hopSeconds: hopMs / 1000)
        print("\(m.model): \(config.layerCount) layers of \(String(format: "%.1f", Double(layerBytes) / 1_048_576)) MiB, hops \(hopMs) ms")
        var rows = [["worker", "layers", "count", "MiB", "ms/layer", "stage ms", "source"]]
        for s in plan.stages {
            rows.append([s.name, "\(s.layers.lowerBound)-\(s.layers.upperBound - 1)", "\(s.layers.count)",
                         String(format: "%.0f", Double(s.weightBytes) / 1_048_576),
                         s.secondsPerLayer.map { String(format: "%.3f", $0 * 1000) } ?? "-",
                         s.stageSeconds.map { String(format: "%.2f", $0 * 1000) } ?? "-",
                         speed.contains { $0.hasPrefix(s.name + "=") } ? "--speed" : "measured here"])
        }
        print(formatTable(rows))
        if !plan.standbys.isEmpty { print("standbys: \(plan.standbys.joined(separator: ", "))") }
        if let one = plan.singleStreamTokensPerSecond, let many = plan.pipelineTokensPerSecond {
            print(String(format: "predicted: %.1f tokens/s for one stream (stages + hops), at most %.1f tokens/s over many streams (slowest stage)", one, many))
        }
    }

    /// NAME=VALUE pairs of an option, each name a worker of the manifest.
    static func pairs(_ values: [String], option: String, names: Set<String>) throws -> [String: Double] {
        var out: [String: Double] = [:]
        for v in values {
            let parts = v.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let x = Double(parts[1]), x.isFinite, x > 0 else {
                throw ValidationError("\(option) \(v.debugDescription): expected NAME=NUMBER with a positive number")
            }
            guard names.contains(parts[0]) else {
                throw ValidationError("\(option) \(v.debugDescription): the manifest has no worker \(parts[0].debugDescription)")
            }
            out[parts[0]] = x
        }
        return out
    }

    /// Seconds one of the model's layers takes for one decoded token after a history of up
    /// to 256 positions, at `threads` threads.
    static func timeOneLayer(file: GGUFFile, config: LlamaConfig, threads: Int) throws -> Double {
        let context = min(512, config.contextLength), batch = 64
        let slice = try LayerSlice(file: file, config: config, layers: LayerRange(0, 1), maxSequences: 1,
                                   contextLength: context, maxBatch: batch, pool: ThreadPool(threadCount: threads))
        return try slice.timePerToken(history: min(256, max(0, context - 16) / batch * batch), batch: batch).decode
    }
}
