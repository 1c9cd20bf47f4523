import Foundation
import LlamaSampling

// MARK: - Completions

/// Token counts a completion reports.
public struct TokenUsage: Sendable, Equatable, Decodable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int

    public init(promptTokens: Int, completionTokens: Int, totalTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
    }
}

/// The JSON request body of `POST /v1/completions`.
func completionRequestBody(prompt: String, parameters: SamplingParameters, maxTokens: Int, stop: [String],
                           stream: Bool) throws -> Data
{
    var object: [String: Any] = [
        "prompt": prompt,
        "max_tokens": maxTokens,
        "stream": stream,
        "temperature": Double(parameters.temperature),
        "top_k": parameters.topK,
        "top_p": Double(parameters.topP),
        "min_p": Double(parameters.minP),
        "repeat_penalty": Double(parameters.repeatPenalty),
        "repeat_last_n": parameters.repeatLastN,
    ]
    if let seed = parameters.seed {
        guard seed <= UInt64(Int64.max) else {
            throw LlamaClientError.invalidArgument("seed \(seed) is larger than the endpoint accepts (\(Int64.max))")
        }
        object["seed"] = Int64(seed)
    }
    if !stop.isEmpty { object["stop"] = stop }
    return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
}

/// Streams a completion from an OpenAI-compatible endpoint (`POST {endpoint}/v1/completions`
/// with `"stream": true`), passing each piece of text to `onText` as it arrives.
///
/// Throwing from `onText` stops reading and closes the connection, which cancels the job
/// on the server.
/// - Parameters:
///   - endpoint: base URL, e.g. `http://127.0.0.1:8080`.
///   - maxTokens: upper bound of generated tokens.
///   - stop: strings that end generation (not included in the text).
/// - Returns: why generation ended ("stop" or "length") and the token counts.
/// - Throws: ``LlamaClientError``; ``LlamaClientError/httpStatus(_:message:)`` with the server's
///   message for a refused request, ``LlamaClientError/streamError(_:)`` for a failure mid-stream.
public func streamCompletion(endpoint: String, prompt: String, parameters: SamplingParameters = SamplingParameters(),
                             maxTokens: Int = 16, stop: [String] = [], timeouts: ClientTimeouts = ClientTimeouts(),
                             onText: (String) throws -> Void) throws -> (finishReason: String, usage: TokenUsage)
{
    let url = try HTTPURL(endpoint).appending("/v1/completions")
    let body = try completionRequestBody(prompt: prompt, parameters: parameters, maxTokens: maxTokens,
                                         stop: stop, stream: true)
    let reader = try sendRequest(method: "POST", url: url, body: [UInt8](body), headers: [:], timeouts: timeouts)
    guard reader.status == 200 else {
        throw LlamaClientError.httpStatus(reader.status, message: errorMessage(from: try reader.readAll()))
    }

    var finishReason: String?
    var usage: TokenUsage?
    var sawDone = false
    var eventData: [String] = []

    func dispatch(_ data: String) throws {
        if data == "[DONE]" {
            sawDone = true
            return
        }
        guard let chunk = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else {
            throw LlamaClientError.malformedResponse("an event is not a JSON object: \(data.prefix(200))")
        }
        if let error = chunk["error"] as? [String: Any] {
            throw LlamaClientError.streamError(error["message"] as? String ?? "unknown error")
        }
        guard let choices = chunk["choices"] as? [[String: Any]], let choice = choices.first else {
            throw LlamaClientError.malformedResponse("an event has no choices: \(data.prefix(200))")
        }
        if let text = choice["text"] as? String, !text.isEmpty {
            try onText(text)
        }
        if let reason = choice["finish_reason"] as? String {
            finishReason = reason
        }
        if let usageObject = chunk["usage"] as? [String: Any],
           let promptTokens = usageObject["prompt_tokens"] as? Int,
           let completionTokens = usageObject["completion_tokens"] as? Int
        {
            let total = usageObject["total_tokens"] as? Int ?? promptTokens + completionTokens
            usage = TokenUsage(promptTokens: promptTokens, completionTokens: completionTokens, totalTokens: total)
        }
    }

    // Server-sent events: "data:" lines accumulate until a blank line ends the event.
    try reader.forEachLine { line in
        if line.isEmpty {
            if !eventData.isEmpty {
                let data = eventData.joined(separator: "\n")
                eventData.removeAll()
                try dispatch(data)
            }
            return !sawDone
        }
        if line.hasPrefix(":") { return true }  // comment
        if line.hasPrefix("data:") {
            var value = line.dropFirst(5)
            if value.hasPrefix(" ") { value = value.dropFirst() }
            eventData.append(String(value))
        }
        return true
    }
    if !eventData.isEmpty, !sawDone { try dispatch(eventData.joined(separator: "\n")) }
    guard sawDone else {
        throw LlamaClientError.malformedResponse("the stream ended before [DONE]")
    }
    guard let finishReason else {
        throw LlamaClientError.malformedResponse("the stream carried no finish_reason")
    }
    guard let usage else {
        throw LlamaClientError.malformedResponse("the stream carried no usage")
    }
    return (finishReason, usage)
}

// MARK: - Status

/// One worker as `GET /status` reports it.
public struct WorkerReport: Sendable, Equatable, Decodable {
    public var name: String
    public var state: String
    public var layers: String?
    public var threads: Int?
    public var address: String?
    public var tokensProcessed: Int
    public var tokensPerSecond: Double
    public var secondsSinceHeartbeat: Double?
}

/// Counters as `GET /status` reports them.
public struct MetricsReport: Sendable, Equatable, Decodable {
    public var requestsTotal: Int
    public var requestsFailed: Int
    public var requestsActive: Int
    public var queueLength: Int
    public var promptTokensTotal: Int
    public var generatedTokensTotal: Int
    public var tokensPerSecond: Double
}

/// The reply of `GET /status`.
public struct ClusterStatus: Sendable, Equatable, Decodable {
    public var model: String
    public var contextLength: Int
    public var ready: Bool
    public var workers: [WorkerReport]
    public var metrics: MetricsReport
}

/// Fetches `GET {endpoint}/status`.
/// - Throws: ``LlamaClientError``.
public func fetchStatus(endpoint: String, timeouts: ClientTimeouts = ClientTimeouts(connect: 5, read: 10)) throws
    -> ClusterStatus
{
    let url = try HTTPURL(endpoint).appending("/status")
    let reader = try sendRequest(method: "GET", url: url, body: nil, headers: [:], timeouts: timeouts)
    let body = try reader.readAll()
    guard reader.status == 200 else {
        throw LlamaClientError.httpStatus(reader.status, message: errorMessage(from: body))
    }
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    do {
        return try decoder.decode(ClusterStatus.self, from: Data(body))
    } catch {
        throw LlamaClientError.malformedResponse("the status is not in the expected form: \(error)")
    }
}

/// The status as a text table for a terminal:
///
///     model llama-2-7b, context 4096, ready
///     requests 12 (1 failed, 2 active, 0 queued), tokens 400 prompt / 321 generated, 7.3 tokens/s
///
///     WORKER  STATE  LAYERS  THREADS  TOKENS  TOKENS/S  HEARTBEAT  ADDRESS
///     w1      ready  0-15    8        120     12.5      0.4 s      tcp://10.0.0.1:5555
public func formatStatusTable(_ status: ClusterStatus) -> String {
    let metrics = status.metrics
    var output = "model \(status.model), context \(status.contextLength), \(status.ready ? "ready" : "NOT READY")\n"
    output += "requests \(metrics.requestsTotal) (\(metrics.requestsFailed) failed, \(metrics.requestsActive) active, "
    output += "\(metrics.queueLength) queued), tokens \(metrics.promptTokensTotal) prompt / "
    output += "\(metrics.generatedTokensTotal) generated, \(formatRate(metrics.tokensPerSecond)) tokens/s\n\n"

    let header = ["WORKER", "STATE", "LAYERS", "THREADS", "TOKENS", "TOKENS/S", "HEARTBEAT", "ADDRESS"]
    let rows = status.workers.map { worker in
        [
            worker.name,
            worker.state,
            worker.layers ?? "-",
            worker.threads.map(String.init) ?? "-",
            String(worker.tokensProcessed),
            formatRate(worker.tokensPerSecond),
            worker.secondsSinceHeartbeat.map { formatRate($0) + " s" } ?? "-",
            worker.address ?? "-",
        ]
    }
    let table = [header] + rows
    let widths = (0 ..< header.count).map { column in table.map { $0[column].count }.max() ?? 0 }
    for row in table {
        let cells = row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }
        output += cells.joined(separator: "  ") + "\n"
    }
    if status.workers.isEmpty { output += "(no workers)\n" }
    return output
}

func formatRate(_ value: Double) -> String {
    guard value.isFinite else { return "-" }
    return String(format: "%.1f", value)
}
