import ArgumentParser
import ClusterTransport
import Foundation
import LlamaKernels
import LlamaModel
import LlamaWorker
import Logging
import ServiceLifecycle

@main
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llama-worker",
        abstract: "LlamaCluster worker: runs a contiguous range of transformer layers for a coordinator.",
        subcommands: [Join.self, Keygen.self])
}

struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a coordinator, load the assigned layers and serve them.",
        discussion: "SIGTERM or SIGINT: leave gracefully (the coordinator moves the layers to a standby first). A second signal leaves at once.")

    @Option(help: "The coordinator's control address, tcp://HOST:PORT.") var coordinator: String
    @Option(help: "This worker's name, as in the manifest (default: the host name).") var name: String?
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "A local copy of the model (otherwise the coordinator streams this worker's layers).") var model: String?
    @Option(help: "Where streamed layers are kept for the next start.") var cacheDir: String?
    @Option(help: "Memory offered to the cluster in MiB (default: what the system has available).") var memory: Int?
    @Option(help: "Address the data input binds, tcp://IP:PORT, port 0: any free port (default: all interfaces with keys or --insecure, else loopback).")
    var listen: String?
    @Option(help: "Host or IP other stages use to reach this worker (default: the address that routes to the coordinator).") var advertise: String?
    @Option(help: "This worker's secret key file (llama-worker keygen); enables CURVE.") var key: String?
    @Option(help: "The coordinator's public key: a .pub file or the Z85 text.") var coordinatorKey: String?
    @Flag(help: "Allow a non-loopback data input without keys.") var insecure = false
    @Flag(help: "Keep this worker's Q4_0 and Q8_0 layers repacked for the AVX2 product in CACHE-DIR/repacked (made once, then mapped).")
    var repack = false
    @Option(help: "Seconds to wait for the coordinator to move this worker's layers before leaving anyway.") var leaveTimeout = 30.0
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown --log-level \(logLevel)") }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "llama-worker")
        var options = WorkerOptions(coordinator: coordinator)
        if repack { try RepackedWeights.enable(directory: (cacheDir ?? WorkerOptions.defaultCacheDirectory) + "/repacked") }
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
        options.advertiseHost = advertise
        options.insecure = insecure
        options.leaveTimeout = leaveTimeout
        switch (key, coordinatorKey) {
        case (nil, nil):
            break
        case let (key?, coordinatorKey?):
            let keys: CurveKeyPair, server: String
            do { keys = try CurveKeyPair.load(secretKeyFile: key) } catch { throw ValidationError("--key: \(error)") }
            do { server = try CurveKeyPair.publicKey(fileOrZ85: coordinatorKey) } catch { throw ValidationError("--coordinator-key: \(error)") }
            options.security = TransportSecurity(keys: keys, coordinatorKey: server)
        default:
            throw ValidationError("--key and --coordinator-key go together")
        }
        options.listen = listen ?? (options.security != nil || insecure ? "tcp://0.0.0.0:0" : "tcp://127.0.0.1:0")
        let worker = try ClusterWorker(options: options, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: WorkerService(worker: worker, logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger))
        try await group.run()
    }
}

/// Runs the worker on its own thread; a graceful shutdown makes it leave (a second one, or
/// the leave timeout, stops it at once).
struct WorkerService: Service {
    let worker: ClusterWorker
    let logger: Logger

    func run() async throws {
        let finished = AsyncStream<Result<Void, Error>>.makeStream()
        let thread = Thread { [worker] in
            finished.continuation.yield(Result { try worker.run() })
            finished.continuation.finish()
        }
        thread.stackSize = 8 << 20
        thread.start()
        let outcome = await withGracefulShutdownHandler {
            var it = finished.stream.makeAsyncIterator()
            return await it.next() ?? .success(())
        } onGracefulShutdown: { [worker, logger] in
            logger.info("leaving gracefully")
            worker.leave()
        }
        try outcome.get()
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a CURVE key pair: PATH.key (secret, mode 0600) and PATH.pub (the Z85 public key).")

    @Option(help: "Path prefix of the two files.") var out: String

    func run() throws {
        let keys = try CurveKeyPair.generate()
        try keys.write(to: out)
        print("wrote \(out).key (secret) and \(out).pub: \(keys.publicKey)")
    }
}
