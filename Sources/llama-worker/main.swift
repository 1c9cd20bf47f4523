import ArgumentParser
import Foundation
import LlamaCluster
import LlamaKernels
import Logging

@main
struct LlamaWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llama-worker",
        abstract: "LlamaCluster worker: runs a contiguous range of transformer layers for a coordinator.",
        subcommands: [Join.self])
}

struct Join: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Join a coordinator, load the assigned layers and serve them.")

    @Option(help: "The coordinator's control address, tcp://HOST:PORT.") var coordinator: String
    @Option(help: "This worker's name, as in the manifest (default: the host name).") var name: String?
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "A local copy of the model (otherwise the coordinator streams this worker's layers).") var model: String?
    @Option(help: "Where streamed layers are kept for the next start.") var cacheDir: String?
    @Option(help: "Memory offered to the cluster in MiB (default: what the system has available).") var memory: Int?
    @Option(help: "Address the data input binds, tcp://IP:PORT (port 0: any free port).") var listen = "tcp://0.0.0.0:0"
    @Option(help: "Host or IP other stages use to reach this worker (default: the address that routes to the coordinator).") var advertise: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"

    func run() throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown --log-level \(logLevel)") }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "llama-worker")
        var options = WorkerOptions(coordinator: coordinator)
        if let name { options.name = name }
        if let threads {
            guard threads > 0 else { throw ValidationError("--threads must be at least 1") }
            options.threads = threads
        }
        options.modelPath = model
        if let cacheDir { options.cacheDirectory = cacheDir }
        if let memory {
            guard memory > 0 else { throw ValidationError("--memory must be positive (MiB)") }
            options.memoryBudget = memory * 1_048_576
        }
        options.listen = listen
        options.advertiseHost = advertise
        let worker = try ClusterWorker(options: options, logger: logger)
        // Stop cleanly on SIGINT/SIGTERM.
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { worker.stop() }
            source.resume()
            Signals.keep.append(source)
        }
        try worker.run()
    }
}

enum Signals {
    nonisolated(unsafe) static var keep: [DispatchSourceSignal] = []
}
