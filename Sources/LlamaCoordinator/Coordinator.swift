import ClusterTransport
import ClusterWire
import CoreMetrics
import Foundation
import GGUF
import LlamaInference
import LlamaKernels
import LlamaModel
import LlamaTokenizer
import Logging
import Synchronization

/// The coordinator: owns the tokenizer, embedding, final norm and output head; assigns layer
/// ranges to workers; and runs every request through the pipeline
/// coordinator → worker 1 → … → worker N → coordinator, batching the sequences of each step
/// into one frame. The parts: ``WorkerRegistry`` (joins, epochs, heartbeats, takeovers),
/// ``ServingCore`` (the sequence table and the scheduler), ``ClusterPipeline`` (the data
/// path), ``WeightServer``, and ``CoordinatorLoop``, which owns the transport and runs them.
public final class Coordinator: CompletionBackend, Sendable {
    public let manifest: ClusterManifest
    public let info: ModelInfo
    public let tokenizer: LlamaTokenizer
    public let frontend: ServingFrontend
    /// The data endpoint workers send results back to.
    public let returnEndpoint: String
    private let loop: Mutex<CoordinatorLoop?>
    private let control = Mutex<(thread: Thread?, stop: Bool, draining: Bool)>((nil, false, false))
    private let stopped = DispatchSemaphore(value: 0)
    private let wake: @Sendable () -> Void
    private let logger: Logger

    /// Loads the model's head and tokenizer and opens the transport (ZeroMQ on the manifest's
    /// control address unless one is given); ``start()`` starts serving.
    /// - Parameter keys: the coordinator's CURVE keys (required when the manifest has `security`).
    public init(manifest: ClusterManifest, logger: Logger, metrics: MetricsFactory = MetricsSystem.factory,
                keys: CurveKeyPair? = nil, transport: sending (any CoordinatorTransport)? = nil) throws {
        self.manifest = manifest
        self.logger = logger
        let file = try GGUFFile(path: manifest.model)
        let config = try LlamaConfig(gguf: file)
        tokenizer = try loadTokenizer(file)
        let contextLength = min(manifest.context ?? config.contextLength, config.contextLength)
        _ = try manifest.assignLayers(layerCount: config.layerCount)  // explicit ranges must fit this model
        info = ModelInfo(name: modelName(file, path: manifest.model), path: manifest.model, contextLength: contextLength,
                         bosID: tokenizer.bosID, eosID: tokenizer.eosID, vocabularySize: config.vocabSize,
                         slotCount: manifest.maxSequences, chatTemplate: file.metadata["tokenizer.chat_template"]?.string)
        if manifest.securityKey != nil && keys == nil {
            throw SecurityError("the manifest has security: the coordinator needs its key (\(manifest.securityKey!))")
        }
        let pool = ThreadPool(threadCount: manifest.coordinatorThreads ?? defaultThreadCount)
        let maxBatch = max(manifest.batch, manifest.maxSequences)
        let head = try LlamaHead(file: file, config: config, maxBatch: maxBatch, pool: pool)
        let clusterMetrics = ClusterMetrics(factory: metrics)
        let maxFrame = Int64(maxBatch) * Int64(config.dim) * 4 + Int64(maxBatch) * 16 + 65536
        let t = try transport ?? ZMQCoordinatorTransport(
            controlAddress: manifest.controlAddress,
            security: keys.map { k in TransportSecurity(keys: k, controlPeers: Set(manifest.workers.compactMap(\.key))) },
            maxDataBytes: maxFrame,
            onRefusal: { [logger] r in
                logger.warning("refused a CURVE handshake on the \(r.domain) socket from \(r.address): key \(r.key.isEmpty ? "none" : r.key) is not allowed")
                clusterMetrics.refused()
            })
        returnEndpoint = t.returnEndpoint
        wake = t.waker
        let layerType = file.tensor(named: LlamaTensorName.layer(0, "attn_q"))?.type.rawValue ?? 0
        let layerBytes = file.tensors.filter { $0.name.hasPrefix("blk.0.") }.reduce(0) { $0 + $1.byteCount }
        let facts = ModelFacts(
            fingerprint: file.fingerprint, layerCount: config.layerCount,
            hyperparameters: ModelHyperparameters(
                layerCount: UInt32(config.layerCount), embeddingWidth: UInt32(config.dim),
                feedForwardWidth: UInt32(config.ffnDim), headCount: UInt32(config.headCount),
                kvHeadCount: UInt32(config.kvHeadCount), vocabularySize: UInt32(config.vocabSize),
                trainingContextLength: UInt32(config.contextLength), ropeFreqBase: config.ropeBase,
                rmsNormEpsilon: config.rmsEpsilon, ropeDimensionCount: UInt32(config.ropeDim)),
            layerBytes: layerBytes, layerType: layerType, contextLength: contextLength)
        let registry = WorkerRegistry(manifest: manifest, model: facts, returnEndpoint: t.returnEndpoint,
                                      coordinatorKey: keys?.publicKey, logger: logger, now: monotonicNow())
        let core = ServingCore(
            settings: .init(slotCount: manifest.maxSequences, batchTokens: manifest.batch,
                            maxInFlight: manifest.framesInFlight ?? max(manifest.stages.count, 1),
                            contextLength: contextLength, speculative: manifest.speculative),
            tokenizer: tokenizer, metrics: ServingMetrics(factory: metrics), logger: logger,
            drafter: try manifest.speculative?.makeDrafter(target: tokenizer.vocabulary, slots: manifest.maxSequences,
                                                           contextLength: contextLength))
        frontend = ServingFrontend(limits: JobLimits(contextLength: contextLength, vocabularySize: config.vocabSize,
                                                     slotCount: manifest.maxSequences),
                                   maxQueue: manifest.maxQueue, wake: t.waker)
        let pipeline = ClusterPipeline(head: head, config: config, dtype: manifest.activations == .f16 ? .f16 : .f32)
        loop = Mutex(CoordinatorLoop(transport: t, registry: registry, core: core, pipeline: pipeline,
                                     weights: WeightServer(file: file), frontend: frontend, metrics: clusterMetrics,
                                     manifest: manifest, logger: logger))
        if manifest.runsInsecurely {
            logger.warning("INSECURE: no keys, and \(manifest.controlAddress) / \(manifest.httpHost):\(manifest.httpPort) are reachable from the network: anyone there can join, read the model and use the API")
        }
    }

    // MARK: - Lifecycle

    /// Starts the coordinator's thread.
    public func start() {
        let t = Thread { [self] in
            guard let loop = loop.withLock({ $0.take() }) else { return }
            while true {
                let (stop, draining) = control.withLock { ($0.stop, $0.draining) }
                if stop { break }
                loop.draining = draining
                loop.turn(timeout: 0.05)
            }
            loop.close()
            stopped.signal()
        }
        t.name = "coordinator"
        t.stackSize = 8 << 20
        control.withLock { $0.thread = t }
        t.start()
        logger.info("coordinator: control \(manifest.controlAddress), data return \(returnEndpoint), waiting for \(manifest.workers.map(\.name).joined(separator: ", "))")
    }

    /// Stops the thread; requests still running end with an error.
    public func shutdown() {
        let running = control.withLock { c -> Bool in
            c.stop = true
            return c.thread != nil
        }
        wake()
        if running {
            stopped.wait()
            control.withLock { $0.thread = nil }
        }
    }

    /// Refuses new requests (HTTP 503 with Retry-After) and waits up to `timeout` seconds
    /// for the running ones to finish. Returns whether they all did.
    public func drain(timeout: Double) async -> Bool {
        control.withLock { $0.draining = true }
        wake()
        let deadline = Date().addingTimeInterval(timeout)
        try? await Task.sleep(nanoseconds: 150_000_000)
        while Date() < deadline {
            let c = frontend.snapshot.counters
            if c.requestsActive == 0 && c.queueLength == 0 { return true }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return false
    }

    // MARK: - CompletionBackend

    public func tokenize(_ text: String, addBOS: Bool) -> [Int32] { tokenizer.encode(text, addBOS: addBOS) }
    public func detokenize(_ ids: [Int32]) -> String { tokenizer.decode(ids) }
    public func piece(_ id: Int32) -> [UInt8] { tokenizer.piece(id) }
    public func specialTokenID(_ text: String) -> Int32? { tokenizer.specialTokenID(text) }
    public func submit(_ job: CompletionJob) throws -> AsyncThrowingStream<CompletionEvent, Error> { try frontend.submit(job) }
    public func health() -> HealthReport { frontend.snapshot.health }
    public func counters() -> BackendCounters { frontend.snapshot.counters }
    public func slots() -> [SlotStatus] { frontend.snapshot.slots }
    public var stageSummary: String { frontend.snapshot.stageSummary }

    /// The most frames that were in the pipeline at once since the start (at most the
    /// manifest's `frames_in_flight`, by default one per worker).
    public var peakFramesInFlight: Int { frontend.snapshot.peakFramesInFlight }

    /// Names of workers whose layers nobody runs.
    public var missingWorkers: [String] { frontend.snapshot.health.missing }
}
