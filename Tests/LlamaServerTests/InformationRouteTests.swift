import TestSupport
import LlamaServer
import CoreMetrics
import LlamaInference
import Prometheus
import Testing

@Suite("Health, metrics, models, status, tokenize")
struct InformationRouteTests {
    @Test("/health is 200 when ready and 503 naming the missing workers otherwise")
    func health() async throws {
        let backend = ScriptedBackend()
        try await withServer(backend) { client in
            let ok = try await client.get("/health")
            #expect(ok.status == 200)
            #expect(ok.json["status"] == "ok")
            #expect(ok.json["workers"]?[0]?["name"] == "w1")
            #expect(ok.json["workers"]?[0]?["layers"] == "0-15")
            #expect(ok.json["workers"]?[1]?["address"] == .null)

            backend.ready = false
            var workers = backend.workers
            workers[1].state = "missing"
            backend.workers = workers
            let down = try await client.get("/health")
            #expect(down.status == 503)
            #expect(down.json["status"] == "unavailable")
            #expect(down.json["missing"] == ["w2"])
            #expect(down.json["workers"]?[1]?["state"] == "missing")
        }
    }

    @Test("/metrics is the Prometheus registry the backend's metrics factory writes to")
    func metrics() async throws {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        Counter(label: "llamacluster_requests_total", factory: factory).increment(by: 12)
        Gauge(label: "llamacluster_worker_up", dimensions: [("worker", "odd \"name\"\\")], factory: factory).record(0)
        Gauge(label: "llamacluster_worker_up", dimensions: [("worker", "w1")], factory: factory).record(1)
        Timer(label: "llamacluster_time_to_first_token_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
            .recordNanoseconds(250_000_000)
        try await withServer(ScriptedBackend(), metrics: registry) { client in
            let reply = try await client.get("/metrics")
            #expect(reply.status == 200)
            #expect(reply.contentType == "text/plain; version=0.0.4; charset=utf-8")
            let samples = try PrometheusTextParser.parse(reply.text)
            #expect(samples["llamacluster_requests_total"] == 12)
            #expect(samples["llamacluster_worker_up{worker=\"w1\"}"] == 1)
            #expect(samples["llamacluster_worker_up{worker=\"odd \\\"name\\\"\\\\\"}"] == 0)
            #expect(samples["llamacluster_time_to_first_token_seconds_count"] == 1)
            #expect(samples["llamacluster_time_to_first_token_seconds_sum"] == 0.25)
        }
    }

    @Test("/v1/models lists the backend's model")
    func models() async throws {
        try await withServer(ScriptedBackend()) { client in
            let reply = try await client.get("/v1/models")
            #expect(reply.status == 200)
            #expect(reply.json["object"] == "list")
            #expect(reply.json["data"]?[0]?["id"] == "scripted-llama")
            #expect(reply.json["data"]?[0]?["object"] == "model")
            #expect(reply.json["data"]?[0]?["meta"]?["n_ctx"] == 256)
        }
    }

    @Test("/status has the model, workers and counters")
    func status() async throws {
        let backend = ScriptedBackend()
        var counters = BackendCounters()
        counters.requestsTotal = 5
        backend.metricsValue = counters
        try await withServer(backend) { client in
            let reply = try await client.get("/status")
            #expect(reply.status == 200)
            #expect(reply.json["model"] == "scripted-llama")
            #expect(reply.json["context_length"] == 256)
            #expect(reply.json["ready"] == true)
            #expect(reply.json["workers"]?[0]?["tokens_per_second"] == 12.5)
            #expect(reply.json["workers"]?[0]?["threads"] == 2)
            #expect(reply.json["workers"]?[0]?["seconds_since_heartbeat"] == 0.4)
            #expect(reply.json["metrics"]?["requests_total"] == 5)
        }
    }

    @Test("/tokenize and /detokenize as llama.cpp's server")
    func tokenizeRoundTrip() async throws {
        try await withServer(ScriptedBackend()) { client in
            let plain = try await client.post("/tokenize", #"{"content": "Hi é"}"#)
            #expect(plain.status == 200)
            let ids = byteTokens("Hi é").map { JSONValue.integer(Int64($0)) }
            #expect(plain.json["tokens"] == .array(ids))

            let special = try await client.post("/tokenize", #"{"content": "Hi", "add_special": true}"#)
            #expect(special.json["tokens"] == [1, 75, 108])

            let pieces = try await client.post("/tokenize", #"{"content": "Hi", "with_pieces": true}"#)
            #expect(pieces.json["tokens"] == [["id": 75, "piece": "H"], ["id": 108, "piece": "i"]])

            let text = try await client.post("/detokenize", #"{"tokens": [1, 75, 108, 2]}"#)
            #expect(text.status == 200)
            #expect(text.json["content"] == "Hi")
        }
    }
}

/// A strict reader of the Prometheus text format 0.0.4, for checking `/metrics`.
enum PrometheusTextParser {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Samples keyed by `name{labels}` as written. Checks that each sample's family was
    /// introduced by a `# TYPE` line (and `# HELP`, if any, names a family) and that every
    /// line is well formed; a histogram's samples are its `_bucket`, `_sum` and `_count`.
    static func parse(_ text: String) throws -> [String: Double] {
        guard text.hasSuffix("\n") else { throw Failure(description: "the text must end with a line feed") }
        var samples: [String: Double] = [:]
        var helped = Set<String>()
        var typed = Set<String>()
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if line.hasPrefix("# HELP ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1)
                guard parts.count == 2, isMetricName(parts[0]) else { throw Failure(description: "bad HELP: \(line)") }
                helped.insert(String(parts[0]))
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                guard parts.count == 2, isMetricName(parts[0]),
                      ["counter", "gauge", "histogram", "summary", "untyped"].contains(String(parts[1]))
                else { throw Failure(description: "bad TYPE: \(line)") }
                typed.insert(String(parts[0]))
                if parts[1] == "histogram" || parts[1] == "summary" {
                    for suffix in ["_bucket", "_sum", "_count"] { typed.insert(String(parts[0]) + suffix) }
                }
            } else if line.hasPrefix("#") || line.isEmpty {
                throw Failure(description: "unexpected line: '\(line)'")
            } else {
                let (key, name, value) = try sample(line)
                guard typed.contains(name) else { throw Failure(description: "sample without TYPE: \(line)") }
                guard samples[key] == nil else { throw Failure(description: "duplicate sample: \(line)") }
                samples[key] = value
            }
        }
        return samples
    }

    static func isMetricName(_ name: Substring) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" || first == ":" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    }

    /// Reads `name{label="value",...} number`.
    static func sample(_ line: Substring) throws -> (key: String, name: String, value: Double) {
        var index = line.startIndex
        while index < line.endIndex, line[index] != "{", line[index] != " " { index = line.index(after: index) }
        let name = line[line.startIndex ..< index]
        guard isMetricName(name) else { throw Failure(description: "bad metric name: \(line)") }
        if index < line.endIndex, line[index] == "{" {
            index = line.index(after: index)
            while true {
                let labelStart = index
                while index < line.endIndex, line[index] != "=" { index = line.index(after: index) }
                guard index < line.endIndex, isMetricName(line[labelStart ..< index]),
                      line.index(after: index) < line.endIndex, line[line.index(after: index)] == "\""
                else { throw Failure(description: "bad label: \(line)") }
                index = line.index(index, offsetBy: 2)
                while true {
                    guard index < line.endIndex else { throw Failure(description: "unterminated label value: \(line)") }
                    if line[index] == "\\" {
                        let escaped = line.index(after: index)
                        guard escaped < line.endIndex, ["\\", "\"", "n"].contains(line[escaped]) else {
                            throw Failure(description: "bad escape: \(line)")
                        }
                        index = line.index(after: escaped)
                    } else if line[index] == "\"" {
                        index = line.index(after: index)
                        break
                    } else {
                        index = line.index(after: index)
                    }
                }
                guard index < line.endIndex else { throw Failure(description: "unterminated labels: \(line)") }
                if line[index] == "," { index = line.index(after: index); continue }
                guard line[index] == "}" else { throw Failure(description: "bad label list: \(line)") }
                index = line.index(after: index)
                break
            }
        }
        guard index < line.endIndex, line[index] == " " else { throw Failure(description: "no value: \(line)") }
        let key = String(line[line.startIndex ..< index])
        let valueText = line[line.index(after: index)...]
        let value: Double
        switch valueText {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let number = Double(valueText), !valueText.contains(" ") else {
                throw Failure(description: "bad value: \(line)")
            }
            value = number
        }
        return (key, String(name), value)
    }
}
