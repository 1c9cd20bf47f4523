import ArgumentParser
import Foundation
import LlamaClient
import LlamaCluster
import LlamaSampling
import LlamaServer
import Logging

// MARK: - start

struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the coordinator: wait for the manifest's workers, then serve the HTTP endpoint.")

    @Option(help: "Cluster manifest (YAML).") var manifest: String
    @Option(help: "Override the manifest's coordinator.control address, tcp://HOST:PORT.") var control: String?
    @Option(help: "Override the manifest's coordinator.http address, HOST:PORT.") var http: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown --log-level \(logLevel)") }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "llama-coord")
        guard let data = FileManager.default.contents(atPath: manifest), let text = String(data: data, encoding: .utf8) else {
            throw ValidationError("cannot read the manifest \(manifest)")
        }
        var m = try ClusterManifest.parse(yaml: text, baseDirectory: (manifest as NSString).deletingLastPathComponent.isEmpty ? "." : (manifest as NSString).deletingLastPathComponent)
        // The overrides go through the manifest's own checks.
        if let control { m.controlAddress = try ClusterManifest.parseControlAddress(control) }
        if let http { (m.httpHost, m.httpPort) = try ClusterManifest.parseHTTPAddress(http) }
        let coordinator = try Coordinator(manifest: m, logger: logger)
        try coordinator.start()
        logger.info("HTTP endpoint on http://\(m.httpHost):\(m.httpPort) (503 on /health until every worker is ready)")
        let server = LlamaHTTPServer(backend: coordinator, host: m.httpHost, port: m.httpPort,
                                     logger: Logger(label: "llama-coord.http"))
        defer { coordinator.shutdown() }
        try await server.run()
    }
}

// MARK: - prompt

struct Prompt: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stream a completion from a coordinator's endpoint to the terminal.")

    @Option(help: "The coordinator's HTTP endpoint, e.g. http://127.0.0.1:8080.") var endpoint = "http://127.0.0.1:8080"
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Stop strings (repeatable).") var stop: [String] = []
    @Argument(help: "The prompt.") var text: String

    func run() throws {
        let params = try sampling.parameters()
        emit(text)
        let start = now()
        var first: Double?
        let (reason, usage) = try streamCompletion(endpoint: endpoint, prompt: text, parameters: params,
                                                   maxTokens: sampling.maxTokens, stop: stop) { piece in
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

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the workers of a cluster: layers, state and speed.")

    @Option(help: "The coordinator's HTTP endpoint.") var endpoint = "http://127.0.0.1:8080"

    func run() throws {
        print(formatStatusTable(try fetchStatus(endpoint: endpoint)))
    }
}
