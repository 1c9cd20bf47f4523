import ClusterTransport
import Foundation
import LlamaKernels
import LlamaModel

/// How a worker is started (`llama-worker join`).
public struct WorkerOptions: Sendable {
    /// The coordinator's control endpoint, "tcp://HOST:PORT".
    public var coordinator: String
    public var name: String
    public var threads: Int
    /// A local copy of the model; without it the coordinator streams this worker's tensors.
    public var modelPath: String?
    /// Where streamed tensors are kept for the next start.
    public var cacheDirectory: String
    /// Memory this worker offers, reported to the coordinator to balance layers.
    public var memoryBudget: Int
    /// Where the data input binds ("tcp://0.0.0.0:0" picks a free port).
    public var listen: String
    /// Host other stages use to reach this worker (default: the local address that routes to the coordinator).
    public var advertiseHost: String?
    public var heartbeatInterval: Double
    /// Seconds without a word from the coordinator before reconnecting (until an assignment
    /// brings the manifest's value).
    public var heartbeatTimeout: Double
    /// After a graceful stop was asked for: seconds to wait for the coordinator to move this
    /// worker's layers elsewhere before leaving anyway.
    public var leaveTimeout: Double
    /// CURVE: this worker's key pair and the coordinator's public key (nil: no security).
    public var security: TransportSecurity?
    /// Largest frame accepted on the data input.
    public var maxFrameBytes: Int64
    /// Allow a non-loopback data input without CURVE keys (`--insecure`).
    public var insecure = false

    public init(coordinator: String, name: String = SystemInfo.hostName, threads: Int = defaultThreadCount,
                modelPath: String? = nil, cacheDirectory: String = WorkerOptions.defaultCacheDirectory,
                memoryBudget: Int = SystemInfo.availableMemory, listen: String = "tcp://0.0.0.0:0",
                advertiseHost: String? = nil, heartbeatInterval: Double = 0.5, heartbeatTimeout: Double = 5,
                leaveTimeout: Double = 30, security: TransportSecurity? = nil, maxFrameBytes: Int64 = 256 << 20) {
        self.coordinator = coordinator
        self.name = name
        self.threads = threads
        self.modelPath = modelPath
        self.cacheDirectory = cacheDirectory
        self.memoryBudget = memoryBudget
        self.listen = listen
        self.advertiseHost = advertiseHost
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTimeout = heartbeatTimeout
        self.leaveTimeout = leaveTimeout
        self.security = security
        self.maxFrameBytes = maxFrameBytes
    }

    public static var defaultCacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/llamacluster" }
        return (env["HOME"] ?? "/tmp") + "/.cache/llamacluster"
    }

    /// Checks the options a worker cannot run with.
    public func validate() throws {
        guard parseTCPEndpoint(coordinator) != nil || coordinator.hasPrefix("mem://") else {
            throw WorkerError.badOption("--coordinator \(coordinator.debugDescription) is not an address like tcp://HOST:PORT")
        }
        guard threads > 0 else { throw WorkerError.badOption("--threads must be at least 1") }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw WorkerError.badOption("--name \(name.debugDescription) must be letters, digits, '-', '_' or '.'")
        }
        if security == nil, !insecure, let (host, _) = parseTCPEndpoint(listen), !isLoopbackHost(host) {
            throw WorkerError.badOption(
                "--listen \(listen) is not a loopback address, and without --key anyone who reaches it could feed this worker frames; "
                + "give --key and --coordinator-key, or --listen tcp://127.0.0.1:0, or --insecure")
        }
    }
}

public enum WorkerError: Error, CustomStringConvertible {
    case badOption(String)
    case rejected(String)
    case weights(String)

    public var description: String {
        switch self {
        case .badOption(let s): return s
        case .rejected(let s): return "the coordinator rejected this worker: \(s)"
        case .weights(let s): return "cannot obtain this worker's weights: \(s)"
        }
    }
}
