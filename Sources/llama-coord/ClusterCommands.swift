import ArgumentParser
import ClusterTransport
import Foundation
import LlamaClient
import LlamaCoordinator
import LlamaInference
import LlamaModel
import LlamaSampling
import LlamaServer
import Logging
import NIOSSL
import Prometheus
import ServiceLifecycle

// MARK: - start

struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the coordinator: wait for the manifest's workers, then serve the HTTP endpoint.")

    @Option(help: "Cluster manifest (YAML).") var manifest: String
    @Option(help: "Override the manifest's coordinator.control address, tcp://HOST:PORT.") var control: String?
    @Option(help: "Override the manifest's coordinator.http address, HOST:PORT.") var http: String?
    @OptionGroup var draft: DraftModelOptions
    @Option(help: "Keep the output head repacked for the AVX2 product in this directory (made once, then mapped).")
    var repackDir: String?
    @OptionGroup var endpoint: EndpointOptions
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"

    func run() async throws {
        bootstrapLogging(logLevel)
        let logger = Logger(label: "llama-coord")
        var m = try loadManifest(manifest)
        // The overrides go through the manifest's own checks.
        if let control { m.controlAddress = try ClusterManifest.parseControlAddress(control) }
        if let http { (m.httpHost, m.httpPort) = try ClusterManifest.parseHTTPAddress(http) }
        m.speculative = try draft.apply(to: m.speculative)
        if let repackDir { try RepackedWeights.enable(directory: repackDir) }
        let apiKeys = try endpoint.apiKeys(manifestFile: m.apiKeysFile)
        try m.checkBindings(hasAPIKeys: !apiKeys.isEmpty)
        let keys = try m.securityKey.map { try CurveKeyPair.load(secretKeyFile: $0) }
        let registry = PrometheusCollectorRegistry()
        let coordinator = try Coordinator(manifest: m, logger: logger, metrics: PrometheusMetricsFactory(registry: registry), keys: keys)
        coordinator.start()
        logger.info("HTTP endpoint on \(endpoint.tlsCert == nil ? "http" : "https")://\(m.httpHost):\(m.httpPort) (503 on /health until every worker is ready)")
        let server = LlamaHTTPServer(backend: coordinator, host: m.httpHost, port: m.httpPort,
                                     options: try endpoint.serverOptions(apiKeys: apiKeys), metrics: registry,
                                     logger: Logger(label: "llama-coord.http"))
        let drainTimeout = m.drainTimeout
        try await serve(server, drain: { await coordinator.drain(timeout: drainTimeout) }, stop: { coordinator.shutdown() },
                        logger: logger)
    }
}

// MARK: - serve

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the HTTP API from this process: every layer here (llama-server's single-host case).")

    @Option(help: "GGUF model file.") var model: String
    @Option(help: "Address to listen on, HOST:PORT.") var http = "127.0.0.1:8080"
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Sequences generated at once (KV-cache slots).") var slots = 4
    @Option(help: "Context length (default: the model's).") var ctx: Int?
    @Option(help: "Most tokens in one batch.") var batch = 512
    @Option(name: .customLong("kv-cache"), help: "How the KV cache stores keys and values: f16 or f32.") var kvCache: KVCacheType = .f16
    @Option(help: "Most requests waiting for a slot.") var maxQueue = 256
    @Option(help: "Speculative decoding by prompt lookup: match length (0: off).") var draftNgram = 0
    @Option(help: "Most tokens drafted at once.") var draftMax = 8
    @OptionGroup var draft: DraftModelOptions
    @Option(help: "Keep Q4_0 and Q8_0 weights repacked for the AVX2 product in this directory (made once, then mapped).")
    var repackDir: String?
    @Option(help: "Seconds SIGTERM waits for running requests.") var drainTimeout = 30.0
    @Flag(help: "Allow a non-loopback address without API keys.") var insecure = false
    @OptionGroup var endpoint: EndpointOptions
    @Option(help: "Log level.") var logLevel = "info"

    func run() async throws {
        bootstrapLogging(logLevel)
        let logger = Logger(label: "llama-coord")
        let (host, port) = try ClusterManifest.parseHTTPAddress(http)
        let apiKeys = try endpoint.apiKeys(manifestFile: nil)
        if !isLoopbackHost(host), apiKeys.isEmpty, !insecure {
            throw ValidationError("--http \(http) is not a loopback address: give --api-key or --api-key-file, or --insecure")
        }
        let registry = PrometheusCollectorRegistry()
        if let repackDir { try RepackedWeights.enable(directory: repackDir) }
        let backend = try LocalBackend(
            modelPath: model,
            options: .init(threads: threads, slots: slots, contextLength: ctx, batch: batch, kvCache: kvCache, maxQueue: maxQueue,
                           speculative: try draft.apply(to: draftNgram > 0 ? SpeculativeSettings(ngram: draftNgram, maxDraft: draftMax) : nil,
                                                        maxDraft: draftMax)),
            metrics: ServingMetrics(factory: PrometheusMetricsFactory(registry: registry)), logger: logger)
        backend.start()
        logger.info("serving \(model) on \(endpoint.tlsCert == nil ? "http" : "https")://\(host):\(port)")
        let server = LlamaHTTPServer(backend: backend, host: host, port: port, options: try endpoint.serverOptions(apiKeys: apiKeys),
                                     metrics: registry, logger: Logger(label: "llama-coord.http"))
        try await serve(server, drain: { await backend.drain(timeout: drainTimeout) }, stop: { backend.shutdown() }, logger: logger)
    }
}

// MARK: - Draft model

/// `--draft-model` for `start` and `serve` (llama-server's `--model-draft`).
struct DraftModelOptions: ParsableArguments {
    @Option(help: "A small GGUF with the model's vocabulary that drafts tokens for speculative decoding on this host.")
    var draftModel: String?
    @Option(help: "The draft model stops at a token it gives less than this probability (default 0.75).")
    var draftPMin: Float?

    /// `settings` with the draft model set; speculation by the draft model alone when
    /// `settings` is nil.
    func apply(to settings: SpeculativeSettings?, maxDraft: Int = 8) throws -> SpeculativeSettings? {
        if let draftPMin, !(0...1).contains(draftPMin) { throw ValidationError("--draft-p-min \(draftPMin) is not in 0...1") }
        guard let draftModel else {
            if draftPMin != nil { throw ValidationError("--draft-p-min needs --draft-model") }
            return settings
        }
        guard FileManager.default.isReadableFile(atPath: draftModel) else {
            throw ValidationError("--draft-model \(draftModel): no readable file there")
        }
        var s = settings ?? SpeculativeSettings(ngram: 0, maxDraft: maxDraft)
        s.draftModel = draftModel
        if let draftPMin { s.draftMinProbability = draftPMin }
        return s
    }
}

// MARK: - Serving with an orderly stop

/// HTTP options shared by `start` and `serve`.
struct EndpointOptions: ParsableArguments {
    @Option(help: "An API key clients must send (repeatable).") var apiKey: [String] = []
    @Option(help: "A file of API keys, one per line.") var apiKeyFile: String?
    @Option(help: "TLS certificate chain (PEM) for HTTPS.") var tlsCert: String?
    @Option(help: "TLS private key (PEM).") var tlsKey: String?

    /// The keys from the options and from the manifest's `security.api_keys` file.
    func apiKeys(manifestFile: String?) throws -> [String] {
        var keys = apiKey
        for path in [apiKeyFile, manifestFile].compactMap({ $0 }) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read the API key file \(path)")
            }
            keys += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        if keys.contains(where: { $0.count < 8 }) { throw ValidationError("API keys must be at least 8 characters long") }
        return keys
    }

    func serverOptions(apiKeys: [String]) throws -> LlamaHTTPServer.Options {
        var o = LlamaHTTPServer.Options(apiKeys: apiKeys)
        switch (tlsCert, tlsKey) {
        case (nil, nil):
            break
        case let (cert?, key?):
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
                let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
                o.tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(privateKey))
            } catch {
                throw ValidationError("cannot load the TLS certificate \(cert) or key \(key): \(error)")
            }
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        return o
    }
}

/// Runs the HTTP server until SIGINT or SIGTERM; then `drain` (new requests get 503 while
/// running ones finish), `stop`, and the server closes.
func serve(_ server: LlamaHTTPServer, drain: @escaping @Sendable () async -> Bool, stop: @escaping @Sendable () -> Void,
           logger: Logger) async throws {
    let app = try server.makeApplication()
    let drainer = DrainService(drain: drain, stop: stop, logger: logger)
    // Services stop in reverse order: the drainer first, the HTTP listener after it.
    let group = ServiceGroup(configuration: .init(
        services: [.init(service: app), .init(service: drainer)],
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

/// Waits for the graceful-shutdown signal, then drains and stops the backend.
struct DrainService: Service {
    let drain: @Sendable () async -> Bool
    let stop: @Sendable () -> Void
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        logger.info("shutting down: new requests get 503 while running ones finish")
        let done = await drain()
        logger.info(done ? "every request finished" : "the drain timeout passed with requests still running; they end now")
        stop()
    }
}

func bootstrapLogging(_ level: String) {
    let parsed = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = parsed
        return h
    }
}

// MARK: - keygen

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

// MARK: - prompt

/// How `prompt` and `status` reach an endpoint that needs an API key or serves HTTPS.
struct ClientOptions: ParsableArguments {
    @Option(help: "API key for the endpoint, sent as Authorization: Bearer KEY.") var apiKey: String?
    @Option(help: "A file whose first line is the API key (keeps it out of the process list).") var apiKeyFile: String?
    @Option(name: .customLong("ca-cert"), help: "A CA certificate (PEM) to trust for an https:// endpoint, e.g. a self-signed one.")
    var caCert: String?

    func validate() throws {
        if apiKey != nil && apiKeyFile != nil { throw ValidationError("give --api-key or --api-key-file, not both") }
    }

    /// The key of `--api-key`, or the first non-blank line of `--api-key-file`.
    func key() throws -> String? {
        guard let apiKeyFile else { return apiKey }
        let text: String
        do { text = try String(contentsOfFile: apiKeyFile, encoding: .utf8) } catch {
            throw ValidationError("--api-key-file \(apiKeyFile): \(error.localizedDescription)")
        }
        guard let line = text.split(whereSeparator: \.isNewline).map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: { !$0.isEmpty }) else {
            throw ValidationError("--api-key-file \(apiKeyFile) holds no key")
        }
        return line
    }

    func endpoint(_ url: String) throws -> LlamaEndpoint {
        LlamaEndpoint(url, apiKey: try key(), caCertificateFile: caCert)
    }
}

struct Prompt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stream a completion from a coordinator's endpoint to the terminal.")

    @Option(help: "The coordinator's HTTP endpoint, e.g. http://127.0.0.1:8080.") var endpoint = "http://127.0.0.1:8080"
    @OptionGroup var client: ClientOptions
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Stop strings (repeatable).") var stop: [String] = []
    @Argument(help: "The prompt.") var text: String

    func run() async throws {
        let params = try sampling.parameters()
        emit(text)
        let start = now()
        var first: Double?
        let (reason, usage) = try await client.endpoint(endpoint).streamCompletion(
            prompt: text, parameters: params, maxTokens: sampling.maxTokens, stop: stop) { piece in
            if first == nil { first = now() }
            emit(piece)
        }
        emit("\n")
        let total = now() - start
        let gen = total - ((first ?? now()) - start)
        printErr(String(format: "%d prompt tokens, %d generated in %.2f s (first token after %.3f s, %.2f tokens/s), finish: %@",
                        usage.promptTokens, usage.completionTokens, total, (first ?? now()) - start,
                        Double(max(usage.completionTokens - 1, 0)) / max(gen, 1e-9), reason))
    }
}

// MARK: - status

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the workers of a cluster: layers, state and speed.")

    @Option(help: "The coordinator's HTTP endpoint.") var endpoint = "http://127.0.0.1:8080"
    @OptionGroup var client: ClientOptions

    func run() async throws {
        print(formatStatusTable(try await client.endpoint(endpoint).status()))
    }
}
