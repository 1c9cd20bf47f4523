import Foundation
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

/// The cluster described by `cluster.yaml`:
///
/// ```yaml
/// model: /models/llama-2-70b.Q4_0.gguf
/// coordinator: { control: "tcp://0.0.0.0:5555", http: "0.0.0.0:8080", threads: 2 }
/// activations: f16        # or f32
/// kv_cache: f16           # or f32: how workers store keys and values
/// max_sequences: 8
/// context: 4096
/// heartbeat_timeout: 5    # seconds without a heartbeat before a worker counts as missing
/// workers:
///   - { name: w1, layers: "0-39", threads: 8 }   # layers 0..39 inclusive
///   - { name: w2 }                               # no range: balanced by reported memory
/// ```
public struct ClusterManifest: Sendable, Equatable {
    public struct Worker: Sendable, Equatable {
        public var name: String
        /// Explicit layers (half-open), or nil to balance by the worker's reported memory.
        public var layers: Range<Int>?
        /// Threads the worker should use (nil: its own choice).
        public var threads: Int?

        public init(name: String, layers: Range<Int>? = nil, threads: Int? = nil) {
            self.name = name
            self.layers = layers
            self.threads = threads
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
    /// Most tokens in one pipeline frame (prefill chunk).
    public var batch: Int
    /// Most frames travelling the pipeline at once (nil: one per worker, so that every stage
    /// can work at the same time on different sequences). With every worker on one machine,
    /// 1 keeps the stages from competing for the same cores and puts every sequence of a step
    /// into one frame, i.e. one pass over the weights.
    public var framesInFlight: Int?
    public var workers: [Worker]

    public init(model: String, controlAddress: String = "tcp://127.0.0.1:5555", httpHost: String = "127.0.0.1",
                httpPort: Int = 8080, coordinatorThreads: Int? = nil, activations: ActivationType = .f16,
                maxSequences: Int = 8, context: Int? = nil, heartbeatTimeout: Double = 5, batch: Int = 512,
                framesInFlight: Int? = nil, kvCache: KVCacheType = .f16, workers: [Worker]) {
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
        self.batch = batch
        self.framesInFlight = framesInFlight
        self.workers = workers
    }

    /// Parses a manifest from YAML text. Relative model paths are resolved against `baseDirectory`.
    public static func parse(yaml: String, baseDirectory: String? = nil) throws -> ClusterManifest {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw ManifestError(field: "", reason: "not valid YAML: \(error)")
        }
        guard let root = node?.mapping else { throw ManifestError(field: "", reason: "the top level must be a mapping of fields") }
        var fields = Fields(root, path: "")
        var model = try fields.string("model")
        if let base = baseDirectory, !model.hasPrefix("/") { model = base + "/" + model }

        var control = "tcp://127.0.0.1:5555", httpHost = "127.0.0.1", httpPort = 8080
        var coordinatorThreads: Int?
        if let c = try fields.optionalMapping("coordinator") {
            var cf = Fields(c, path: "coordinator.")
            if let v = try cf.optionalString("control") { control = try Self.parseControlAddress(v) }
            if let v = try cf.optionalString("http") { (httpHost, httpPort) = try Self.parseHTTPAddress(v) }
            coordinatorThreads = try cf.optionalInt("threads", range: 1...1024)
            try cf.rejectUnknown()
        }
        let activations = try fields.optionalPrecision("activations", ActivationType.self) ?? .f16
        let kvCache = try fields.optionalPrecision("kv_cache", KVCacheType.self) ?? .f16
        let maxSequences = try fields.optionalInt("max_sequences", range: 1...1024) ?? 8
        let context = try fields.optionalInt("context", range: 8...1_048_576)
        let heartbeat = try fields.optionalDouble("heartbeat_timeout", range: 0.2...3600) ?? 5
        let batch = try fields.optionalInt("batch", range: 1...8192) ?? 512
        let framesInFlight = try fields.optionalInt("frames_in_flight", range: 1...64)

        guard let list = try fields.sequence("workers"), !list.isEmpty else {
            throw ManifestError(field: "workers", reason: "list at least one worker")
        }
        var workers: [Worker] = []
        var names = Set<String>()
        for (i, item) in list.enumerated() {
            let path = "workers[\(i)]"
            guard let m = item.mapping else { throw ManifestError(field: path, reason: "each worker is a mapping like { name: w1 }") }
            var wf = Fields(m, path: path + ".")
            let name = try wf.string("name")
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw ManifestError(field: path + ".name", reason: "\(name.debugDescription) must be letters, digits, '-', '_' or '.'")
            }
            guard names.insert(name).inserted else { throw ManifestError(field: path + ".name", reason: "\(name.debugDescription) is listed twice") }
            var layers: Range<Int>?
            if let text = try wf.optionalScalarText("layers") {
                layers = try parseLayerRange(text, field: path + ".layers")
            }
            let threads = try wf.optionalInt("threads", range: 1...1024)
            try wf.rejectUnknown()
            workers.append(Worker(name: name, layers: layers, threads: threads))
        }
        // Explicit ranges must follow the pipeline order and not overlap.
        var last = -1
        for (i, w) in workers.enumerated() {
            guard let r = w.layers else { continue }
            guard r.lowerBound > last else {
                throw ManifestError(field: "workers[\(i)].layers", reason: "layers \(r.lowerBound)-\(r.upperBound - 1) overlap or precede an earlier worker's; list workers in layer order")
            }
            last = r.upperBound - 1
        }
        try fields.rejectUnknown()
        return ClusterManifest(model: model, controlAddress: control, httpHost: httpHost, httpPort: httpPort,
                               coordinatorThreads: coordinatorThreads, activations: activations, maxSequences: maxSequences,
                               context: context, heartbeatTimeout: heartbeat, batch: batch,
                               framesInFlight: framesInFlight, kvCache: kvCache, workers: workers)
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
            guard let a = Int(parts[0]), a >= 0 else { throw bad }
            return a..<(a + 1)
        case 2:
            guard let a = Int(parts[0]), let b = Int(parts[1]), a >= 0 else { throw bad }
            guard b >= a else { throw ManifestError(field: field, reason: "\(text.debugDescription) ends before it starts") }
            return a..<(b + 1)
        default:
            throw bad
        }
    }

    /// Assigns every worker its layers for a model of `layerCount` layers: explicit ranges are
    /// kept, and each run of workers without one shares the layers between its neighbours in
    /// proportion to `memory` (bytes each reported; equal shares when unknown).
    public func assignLayers(layerCount: Int, memory: [String: Int] = [:]) throws -> [String: Range<Int>] {
        var result: [String: Range<Int>] = [:]
        var cursor = 0
        var i = 0
        while i < workers.count {
            if let r = workers[i].layers {
                guard r.lowerBound == cursor else {
                    throw ManifestError(field: "workers[\(i)].layers",
                                        reason: cursor < r.lowerBound ? "layers \(cursor)-\(r.lowerBound - 1) are assigned to no worker" : "overlaps the previous worker's layers")
                }
                guard r.upperBound <= layerCount else {
                    throw ManifestError(field: "workers[\(i)].layers", reason: "the model has only \(layerCount) layers (0-\(layerCount - 1))")
                }
                result[workers[i].name] = r
                cursor = r.upperBound
                i += 1
                continue
            }
            // A run of workers without ranges, up to the next explicit range (or the end).
            var j = i
            while j < workers.count && workers[j].layers == nil { j += 1 }
            let end = j < workers.count ? workers[j].layers!.lowerBound : layerCount
            let run = Array(workers[i..<j])
            let available = end - cursor
            guard available >= run.count else {
                throw ManifestError(field: "workers[\(i)]", reason: "\(run.count) workers share only \(max(available, 0)) layers")
            }
            let weights = run.map { Double(max(memory[$0.name] ?? 1, 1)) }
            let total = weights.reduce(0, +)
            var assigned = 0
            var acc = 0.0
            for (k, w) in run.enumerated() {
                acc += weights[k]
                var upto = k == run.count - 1 ? available : Int((acc / total * Double(available)).rounded())
                upto = max(upto, assigned + 1)                          // at least one layer each
                upto = min(upto, available - (run.count - 1 - k))       // leave one for each that follows
                result[w.name] = (cursor + assigned)..<(cursor + upto)
                assigned = upto
            }
            cursor = end
            i = j
        }
        guard cursor == layerCount else {
            throw ManifestError(field: "workers", reason: "layers \(cursor)-\(layerCount - 1) are assigned to no worker")
        }
        return result
    }
}

// MARK: - Field access with error paths

private struct Fields {
    let mapping: Node.Mapping
    let path: String
    var seen = Set<String>()

    init(_ mapping: Node.Mapping, path: String) {
        self.mapping = mapping
        self.path = path
    }

    mutating func node(_ key: String) -> Node? {
        seen.insert(key)
        return mapping[Node(key)]
    }

    mutating func optionalScalarText(_ key: String) throws -> String? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string else { throw ManifestError(field: path + key, reason: "expected a single value") }
        return s
    }

    mutating func string(_ key: String) throws -> String {
        guard let s = try optionalString(key) else { throw ManifestError(field: path + key, reason: "is required") }
        return s
    }

    mutating func optionalString(_ key: String) throws -> String? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, !s.isEmpty else { throw ManifestError(field: path + key, reason: "expected a non-empty string") }
        return s
    }

    /// An "f16" or "f32" choice (any case).
    mutating func optionalPrecision<T: RawRepresentable>(_ key: String, _ type: T.Type) throws -> T? where T.RawValue == String {
        guard let s = try optionalString(key) else { return nil }
        guard let v = T(rawValue: s.lowercased()) else { throw ManifestError(field: path + key, reason: "\(s.debugDescription) is not f16 or f32") }
        return v
    }

    mutating func optionalInt(_ key: String, range: ClosedRange<Int>) throws -> Int? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, let v = Int(s) else {
            throw ManifestError(field: path + key, reason: "\(n.scalar?.string.debugDescription ?? "this") is not an integer")
        }
        guard range.contains(v) else { throw ManifestError(field: path + key, reason: "\(v) is outside \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    mutating func optionalDouble(_ key: String, range: ClosedRange<Double>) throws -> Double? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, let v = Double(s), v.isFinite else {
            throw ManifestError(field: path + key, reason: "\(n.scalar?.string.debugDescription ?? "this") is not a number")
        }
        guard range.contains(v) else { throw ManifestError(field: path + key, reason: "\(v) is outside \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    mutating func optionalMapping(_ key: String) throws -> Node.Mapping? {
        guard let n = node(key) else { return nil }
        guard let m = n.mapping else { throw ManifestError(field: path + key, reason: "expected a mapping") }
        return m
    }

    mutating func sequence(_ key: String) throws -> Node.Sequence? {
        guard let n = node(key) else { throw ManifestError(field: path + key, reason: "is required") }
        guard let s = n.sequence else { throw ManifestError(field: path + key, reason: "expected a list") }
        return s
    }

    func rejectUnknown() throws {
        for (k, _) in mapping {
            let key = k.scalar?.string ?? "\(k)"
            if !seen.contains(key) { throw ManifestError(field: path + key, reason: "unknown field") }
        }
    }
}
