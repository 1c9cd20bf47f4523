import ClusterTransport
import Foundation
import LlamaInference
import LlamaModel
import Yams

/// A problem in a cluster manifest, naming the field.
public struct ManifestError: Error, Equatable, CustomStringConvertible {
    public let field: String
    public let reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { field.isEmpty ? "manifest: \(reason)" : "manifest field \(field): \(reason)" }
}

/// Encoding of activations on the wire between pipeline stages.
public enum ActivationType: String, Sendable, Codable {
    case f32, f16
}

/// The cluster described by `cluster.yaml` (see the README's manifest section for every field):
///
/// ```yaml
/// model: /models/llama-2-70b.Q4_0.gguf
/// coordinator: { control: "tcp://0.0.0.0:5555", http: "0.0.0.0:8080", threads: 2 }
/// security: { key: keys/coord.key, api_keys: keys/api-keys.txt }
/// max_sequences: 8
/// heartbeat_timeout: 5
/// recovery_timeout: 60
/// workers:
///   - { name: w1, layers: "0-39", threads: 8, key: "<Z85 public key>" }
///   - { name: w2, key: "..." }                   # no range: balanced by reported memory
///   - { name: s1, standby: true, key: "..." }    # takes over a missing worker's layers
/// ```
public struct ClusterManifest: Sendable, Equatable {
    public struct Worker: Sendable, Equatable {
        public var name: String
        /// Explicit layers (half-open), or nil to balance by the worker's reported memory.
        public var layers: Range<Int>?
        /// Threads the worker should use (nil: its own choice).
        public var threads: Int?
        /// A standby: joins and waits, and takes over the layers of a worker that goes missing.
        public var standby: Bool
        /// The worker's CURVE public key (Z85); required with `security`.
        public var key: String?

        public init(name: String, layers: Range<Int>? = nil, threads: Int? = nil, standby: Bool = false, key: String? = nil) {
            self.name = name
            self.layers = layers
            self.threads = threads
            self.standby = standby
            self.key = key
        }
    }

    public var model: String
    public var controlAddress: String
    public var httpHost: String
    public var httpPort: Int
    public var coordinatorThreads: Int?
    public var activations: ActivationType
    /// How every worker's KV cache stores keys and values.
    public var kvCache: KVCacheType
    public var maxSequences: Int
    /// Context length (nil: the model's).
    public var context: Int?
    public var heartbeatTimeout: Double
    /// Seconds a lost worker's layers may stay uncovered before paused requests give up.
    public var recoveryTimeout: Double
    /// Seconds SIGTERM waits for running requests before the coordinator exits.
    public var drainTimeout: Double
    /// Most requests waiting for a slot; more get HTTP 503 with Retry-After.
    public var maxQueue: Int
    /// Seconds a frame may take through the pipeline beyond what the measured stage speeds
    /// predict, before it counts as lost and its work is redone.
    public var frameTimeout: Double
    /// Most tokens in one pipeline frame (prefill chunk).
    public var batch: Int
    /// Most frames travelling the pipeline at once (nil: one per worker, so that every stage
    /// can work at the same time on different sequences). With every worker on one machine,
    /// 1 keeps the stages from competing for the same cores and puts every sequence of a step
    /// into one frame, i.e. one pass over the weights.
    public var framesInFlight: Int?
    /// Speculative decoding by prompt lookup (nil: off).
    public var speculative: SpeculativeSettings?
    /// The coordinator's secret key file (CURVE on every socket; worker keys required).
    public var securityKey: String?
    /// A file of HTTP API keys, one per line.
    public var apiKeysFile: String?
    /// Allow binding non-loopback addresses without keys.
    public var insecure: Bool
    public var workers: [Worker]

    public init(model: String, controlAddress: String = "tcp://127.0.0.1:5555", httpHost: String = "127.0.0.1",
                httpPort: Int = 8080, coordinatorThreads: Int? = nil, activations: ActivationType = .f16,
                maxSequences: Int = 8, context: Int? = nil, heartbeatTimeout: Double = 5, recoveryTimeout: Double = 60,
                drainTimeout: Double = 30, maxQueue: Int = 256, frameTimeout: Double = 30, batch: Int = 512,
                framesInFlight: Int? = nil, kvCache: KVCacheType = .f16, speculative: SpeculativeSettings? = nil,
                securityKey: String? = nil, apiKeysFile: String? = nil, insecure: Bool = false, workers: [Worker]) {
        self.model = model
        self.controlAddress = controlAddress
        self.httpHost = httpHost
        self.httpPort = httpPort
        self.coordinatorThreads = coordinatorThreads
        self.activations = activations
        self.kvCache = kvCache
        self.maxSequences = maxSequences
        self.context = context
        self.heartbeatTimeout = heartbeatTimeout
        self.recoveryTimeout = recoveryTimeout
        self.drainTimeout = drainTimeout
        self.maxQueue = maxQueue
        self.frameTimeout = frameTimeout
        self.batch = batch
        self.framesInFlight = framesInFlight
        self.speculative = speculative
        self.securityKey = securityKey
        self.apiKeysFile = apiKeysFile
        self.insecure = insecure
        self.workers = workers
    }

    /// The workers that run layers, in pipeline order (standbys left out).
    public var stages: [Worker] { workers.filter { !$0.standby } }
    public var standbys: [Worker] { workers.filter(\.standby) }

    /// Parses a manifest from YAML text. Relative paths are resolved against `baseDirectory`.
    public static func parse(yaml: String, baseDirectory: String? = nil) throws -> ClusterManifest {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw ManifestError(field: "", reason: "not valid YAML: \(error)")
        }
        guard let root = node?.mapping else { throw ManifestError(field: "", reason: "the top level must be a mapping of fields") }
        func resolve(_ path: String) -> String {
            guard let base = baseDirectory, !path.hasPrefix("/") else { return path }
            return base + "/" + path
        }
        var fields = Fields(root, path: "")
        var m = ClusterManifest(model: resolve(try fields.string("model")), workers: [])
        if let c = try fields.optionalMapping("coordinator") {
            var cf = Fields(c, path: "coordinator.")
            if let v = try cf.optionalString("control") { m.controlAddress = try Self.parseControlAddress(v) }
            if let v = try cf.optionalString("http") { (m.httpHost, m.httpPort) = try Self.parseHTTPAddress(v) }
            m.coordinatorThreads = try cf.optionalInt("threads", range: 1...1024)
            try cf.rejectUnknown()
        }
        if let sec = try fields.optionalMapping("security") {
            var sf = Fields(sec, path: "security.")
            m.securityKey = try sf.optionalString("key").map(resolve)
            m.apiKeysFile = try sf.optionalString("api_keys").map(resolve)
            try sf.rejectUnknown()
            if m.securityKey == nil {
                throw ManifestError(field: "security.key", reason: "is required: the coordinator's secret key file (llama-coord keygen --out PATH)")
            }
        }
        if let spec = try fields.optionalMapping("speculative") {
            var sp = Fields(spec, path: "speculative.")
            m.speculative = SpeculativeSettings(ngram: try sp.optionalInt("ngram", range: 0...32) ?? 3,
                                                maxDraft: try sp.optionalInt("draft", range: 1...64) ?? 8,
                                                draftModel: try sp.optionalString("model").map(resolve),
                                                draftMinProbability: Float(try sp.optionalDouble("p_min", range: 0...1) ?? 0.75))
            if m.speculative!.ngram == 0 && m.speculative!.draftModel == nil {
                throw ManifestError(field: "speculative.ngram", reason: "0 turns prompt lookup off, so `speculative.model` (a draft model) is needed")
            }
            try sp.rejectUnknown()
        }
        m.insecure = try fields.optionalBool("insecure") ?? false
        m.activations = try fields.optionalPrecision("activations", ActivationType.self) ?? .f16
        m.kvCache = try fields.optionalPrecision("kv_cache", KVCacheType.self) ?? .f16
        m.maxSequences = try fields.optionalInt("max_sequences", range: 1...1024) ?? 8
        m.context = try fields.optionalInt("context", range: 8...1_048_576)
        m.heartbeatTimeout = try fields.optionalDouble("heartbeat_timeout", range: 0.2...3600) ?? 5
        m.recoveryTimeout = try fields.optionalDouble("recovery_timeout", range: 0...86400) ?? 60
        m.drainTimeout = try fields.optionalDouble("drain_timeout", range: 0...86400) ?? 30
        m.maxQueue = try fields.optionalInt("max_queue", range: 1...1_000_000) ?? 256
        m.frameTimeout = try fields.optionalDouble("frame_timeout", range: 0.5...86400) ?? 30
        m.batch = try fields.optionalInt("batch", range: 1...8192) ?? 512
        m.framesInFlight = try fields.optionalInt("frames_in_flight", range: 1...64)

        guard let list = try fields.sequence("workers"), !list.isEmpty else {
            throw ManifestError(field: "workers", reason: "list at least one worker")
        }
        var names = Set<String>()
        for (i, item) in list.enumerated() {
            let path = "workers[\(i)]"
            guard let map = item.mapping else { throw ManifestError(field: path, reason: "each worker is a mapping like { name: w1 }") }
            var wf = Fields(map, path: path + ".")
            let name = try wf.string("name")
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw ManifestError(field: path + ".name", reason: "\(name.debugDescription) must be letters, digits, '-', '_' or '.'")
            }
            guard names.insert(name).inserted else { throw ManifestError(field: path + ".name", reason: "\(name.debugDescription) is listed twice") }
            var w = Worker(name: name)
            if let text = try wf.optionalScalarText("layers") { w.layers = try parseLayerRange(text, field: path + ".layers") }
            w.threads = try wf.optionalInt("threads", range: 1...1024)
            w.standby = try wf.optionalBool("standby") ?? false
            if let key = try wf.optionalString("key") {
                // The Z85 text, or the worker's .pub file (relative to the manifest).
                if CurveKeyPair.isValidKey(key) {
                    w.key = key
                } else if key.hasSuffix(".pub") {
                    do {
                        w.key = try CurveKeyPair.publicKey(fileOrZ85: resolve(key))
                    } catch {
                        throw ManifestError(field: path + ".key", reason: "\(error)")
                    }
                } else {
                    throw ManifestError(field: path + ".key", reason: "\(key.debugDescription) is neither a Z85 public key (40 characters) nor a .pub file")
                }
            }
            if w.standby && w.layers != nil {
                throw ManifestError(field: path + ".layers", reason: "a standby has no layers of its own: it takes over a missing worker's")
            }
            if m.securityKey != nil && w.key == nil {
                throw ManifestError(field: path + ".key", reason: "is required with security: the worker's public key (its .pub file)")
            }
            if m.securityKey == nil && w.key != nil {
                throw ManifestError(field: path + ".key", reason: "worker keys need security.key (the coordinator's own key)")
            }
            try wf.rejectUnknown()
            m.workers.append(w)
        }
        guard !m.stages.isEmpty else { throw ManifestError(field: "workers", reason: "list at least one worker that is not a standby") }
        // Explicit ranges must follow the pipeline order and not overlap.
        var last = -1
        for (i, w) in m.workers.enumerated() {
            guard let r = w.layers else { continue }
            guard r.lowerBound > last else {
                throw ManifestError(field: "workers[\(i)].layers", reason: "layers \(r.lowerBound)-\(r.upperBound - 1) overlap or precede an earlier worker's; list workers in layer order")
            }
            last = r.upperBound - 1
        }
        try fields.rejectUnknown()
        try m.checkBindings()
        return m
    }

    /// Secure by default: without `security` the coordinator binds only loopback addresses,
    /// unless the manifest says `insecure: true`.
    /// - Throws: ``ManifestError`` naming the address.
    public func checkBindings(hasAPIKeys: Bool? = nil) throws {
        guard securityKey == nil, !insecure else { return }
        if let (host, _) = parseTCPEndpoint(controlAddress), !isLoopbackHost(host) {
            throw ManifestError(field: "coordinator.control", reason: "\(controlAddress) is not a loopback address: without `security:` anyone who reaches it could join the cluster and copy the model; add security keys (llama-coord keygen) or `insecure: true`")
        }
        if !isLoopbackHost(httpHost) && !(hasAPIKeys ?? (apiKeysFile != nil)) {
            throw ManifestError(field: "coordinator.http", reason: "\(httpHost):\(httpPort) is not a loopback address: without API keys anyone who reaches it could use the model; add security keys and api_keys, --api-key, or `insecure: true`")
        }
    }

    /// Whether the cluster runs open on a network (no keys, `insecure: true`, a non-loopback
    /// address): logged at start and shown by `/health` and `status`.
    public var runsInsecurely: Bool {
        guard securityKey == nil else { return false }
        let controlOpen = parseTCPEndpoint(controlAddress).map { !isLoopbackHost($0.host) } ?? false
        return insecure && (controlOpen || !isLoopbackHost(httpHost))
    }

    /// Checks a ZeroMQ control address "tcp://HOST:PORT" (field `coordinator.control`).
    public static func parseControlAddress(_ v: String) throws -> String {
        guard v.hasPrefix("tcp://"), v.split(separator: ":").count == 3 else {
            throw ManifestError(field: "coordinator.control", reason: "\(v.debugDescription) is not a ZeroMQ address like \"tcp://0.0.0.0:5555\"")
        }
        return v
    }

    /// Parses an HTTP listen address "HOST:PORT" (field `coordinator.http`); an empty host means all interfaces.
    public static func parseHTTPAddress(_ v: String) throws -> (host: String, port: Int) {
        guard let colon = v.lastIndex(of: ":"), let port = Int(v[v.index(after: colon)...]), (1...65535).contains(port) else {
            throw ManifestError(field: "coordinator.http", reason: "\(v.debugDescription) is not an address like \"0.0.0.0:8080\"")
        }
        let host = String(v[..<colon])
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    /// Parses "0-39" (inclusive) or "7" into a half-open range.
    static func parseLayerRange(_ text: String, field: String) throws -> Range<Int> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let bad = ManifestError(field: field, reason: "\(text.debugDescription) is not a layer range like \"0-39\" (inclusive)")
        switch parts.count {
        case 1:
            // Int.max is refused: the half-open range ends one past the last layer.
            guard let a = Int(parts[0]), a >= 0, a < Int.max else { throw bad }
            return a..<(a + 1)
        case 2:
            guard let a = Int(parts[0]), let b = Int(parts[1]), a >= 0, b < Int.max else { throw bad }
            guard b >= a else { throw ManifestError(field: field, reason: "\(text.debugDescription) ends before it starts") }
            return a..<(b + 1)
        default:
            throw bad
        }
    }
}
