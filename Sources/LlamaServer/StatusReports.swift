// MARK: - Prometheus text exposition

/// Renders backend counters and worker states in the Prometheus text exposition format 0.0.4.
public enum PrometheusExposition {
    /// The `Content-Type` of the exposition.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The metrics document: a `# HELP` and a `# TYPE` line before each metric family.
    public static func render(metrics: BackendMetrics, workers: [WorkerStatus]) -> String {
        var output = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: Double)]) {
            output += "# HELP \(name) \(help)\n"
            output += "# TYPE \(name) \(type)\n"
            for sample in samples {
                output += name + sample.labels + " " + format(sample.value) + "\n"
            }
        }
        func single(_ value: Double) -> [(labels: String, value: Double)] { [("", value)] }
        func perWorker(_ value: (WorkerStatus) -> Double) -> [(labels: String, value: Double)] {
            workers.map { ("{worker=\"\(escapeLabelValue($0.name))\"}", value($0)) }
        }

        family("llamacluster_requests_total", "counter", "Completion requests received.",
               single(Double(metrics.requestsTotal)))
        family("llamacluster_requests_failed_total", "counter", "Completion requests that ended in an error.",
               single(Double(metrics.requestsFailed)))
        family("llamacluster_requests_active", "gauge", "Completion requests being generated now.",
               single(Double(metrics.requestsActive)))
        family("llamacluster_queue_length", "gauge", "Completion requests waiting for a free sequence.",
               single(Double(metrics.queueLength)))
        family("llamacluster_prompt_tokens_total", "counter", "Prompt tokens processed.",
               single(Double(metrics.promptTokensTotal)))
        family("llamacluster_generated_tokens_total", "counter", "Tokens generated.",
               single(Double(metrics.generatedTokensTotal)))
        family("llamacluster_tokens_per_second", "gauge", "Generated tokens per second over the last few seconds.",
               single(metrics.tokensPerSecond))
        family("llamacluster_worker_up", "gauge", "Whether the worker is ready (1) or not (0).",
               perWorker { $0.state == "ready" ? 1 : 0 })
        family("llamacluster_worker_tokens_total", "counter", "Tokens the worker has processed.",
               perWorker { Double($0.tokensProcessed) })
        family("llamacluster_worker_tokens_per_second", "gauge", "Tokens per second the worker processed while busy.",
               perWorker { $0.tokensPerSecond })
        return output
    }

    /// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN` for the special values).
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value.rounded() == value, abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// A label value with backslash, double quote and line feed escaped.
    static func escapeLabelValue(_ value: String) -> String {
        var output = ""
        for character in value {
            switch character {
            case "\\": output += "\\\\"
            case "\"": output += "\\\""
            case "\n": output += "\\n"
            default: output.append(character)
            }
        }
        return output
    }
}

// MARK: - JSON reports

extension WorkerStatus {
    /// The worker as `/health` and `/status` show it (snake_case keys, null for unknown values).
    public var json: JSONValue {
        [
            "name": .string(name),
            "state": .string(state),
            "layers": JSONValue(layers),
            "threads": threads.map { JSONValue($0) } ?? .null,
            "address": JSONValue(address),
            "tokens_processed": JSONValue(tokensProcessed),
            "tokens_per_second": JSONValue(tokensPerSecond),
            "seconds_since_heartbeat": secondsSinceHeartbeat.map { JSONValue($0) } ?? .null,
        ]
    }
}

extension BackendMetrics {
    /// The counters as `/status` shows them.
    public var json: JSONValue {
        [
            "requests_total": JSONValue(requestsTotal),
            "requests_failed": JSONValue(requestsFailed),
            "requests_active": JSONValue(requestsActive),
            "queue_length": JSONValue(queueLength),
            "prompt_tokens_total": JSONValue(promptTokensTotal),
            "generated_tokens_total": JSONValue(generatedTokensTotal),
            "tokens_per_second": JSONValue(tokensPerSecond),
        ]
    }
}
