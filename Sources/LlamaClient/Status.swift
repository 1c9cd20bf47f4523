import Foundation

// MARK: - Status

/// One worker as `GET /status` reports it.
public struct WorkerReport: Sendable, Equatable, Decodable {
    public var name: String
    /// "waiting", "loading", "ready", "missing", "standby", "leaving" or "failed: ...".
    public var state: String
    /// Layers it runs, "0-39"; nil for a standby that serves none.
    public var layers: String?
    public var threads: Int?
    public var address: String?
    public var tokensProcessed: Int
    public var tokensPerSecond: Double
    public var secondsSinceHeartbeat: Double?
    /// The manifest lists it as a standby (it takes over a missing worker's layers); false
    /// when the server does not say.
    public var standby: Bool

    private enum CodingKeys: String, CodingKey {
        case name, state, layers, threads, address, tokensProcessed, tokensPerSecond, secondsSinceHeartbeat, standby
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        state = try c.decode(String.self, forKey: .state)
        layers = try c.decodeIfPresent(String.self, forKey: .layers)
        threads = try c.decodeIfPresent(Int.self, forKey: .threads)
        address = try c.decodeIfPresent(String.self, forKey: .address)
        tokensProcessed = try c.decode(Int.self, forKey: .tokensProcessed)
        tokensPerSecond = try c.decode(Double.self, forKey: .tokensPerSecond)
        secondsSinceHeartbeat = try c.decodeIfPresent(Double.self, forKey: .secondsSinceHeartbeat)
        standby = try c.decodeIfPresent(Bool.self, forKey: .standby) ?? false
    }
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
    /// Speculative decoding: tokens drafted and how many of them the model accepted (nil from
    /// a server that does not report them).
    public var draftTokens: Int?
    public var draftTokensAccepted: Int?
}

/// The reply of `GET /status`. Fields the server adds later are ignored; `draining` and
/// `insecure` are false when it does not send them.
public struct ClusterStatus: Sendable, Equatable, Decodable {
    public var model: String
    public var contextLength: Int
    public var ready: Bool
    /// The workers and standbys in manifest order.
    public var workers: [WorkerReport]
    public var metrics: MetricsReport
    /// Draining after SIGTERM: running requests finish, new ones are refused.
    public var draining: Bool
    /// The endpoint runs without API keys on a network address.
    public var insecure: Bool

    private enum CodingKeys: String, CodingKey {
        case model, contextLength, ready, workers, metrics, draining, insecure
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        contextLength = try c.decode(Int.self, forKey: .contextLength)
        ready = try c.decode(Bool.self, forKey: .ready)
        workers = try c.decode([WorkerReport].self, forKey: .workers)
        metrics = try c.decode(MetricsReport.self, forKey: .metrics)
        draining = try c.decodeIfPresent(Bool.self, forKey: .draining) ?? false
        insecure = try c.decodeIfPresent(Bool.self, forKey: .insecure) ?? false
    }

    /// Decodes the body of `GET /status` from `peer` (named in errors).
    static func decode(_ body: [UInt8], from peer: String) throws -> ClusterStatus {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(ClusterStatus.self, from: Data(body))
        } catch {
            throw LlamaClientError.malformedResponse("the status from \(peer) is not in the expected form: \(error)")
        }
    }
}

/// The request of `GET {endpoint}/status`.
func statusRequest(endpoint: String, settings: CallSettings) throws -> OutgoingRequest {
    try OutgoingRequest(method: "GET", url: try EndpointURL(endpoint).appending("/status"), body: nil, headers: [:],
                        settings: settings)
}

/// The status from a whole response of `peer` to `GET /status`.
func status(from response: HTTPClientResponse, of peer: String) throws -> ClusterStatus {
    guard response.status == 200 else {
        throw LlamaClientError.httpStatus(response.status, message: errorMessage(from: response.body))
    }
    return try ClusterStatus.decode(response.body, from: peer)
}

/// Fetches `GET {endpoint}/status`, blocking the calling thread (see ``LlamaEndpoint`` for the
/// async form). `apiKey` and `caCertificateFile` as for ``streamCompletion(endpoint:prompt:parameters:maxTokens:stop:timeouts:apiKey:caCertificateFile:onText:)``.
/// - Throws: ``LlamaClientError``.
public func fetchStatus(endpoint: String, timeouts: ClientTimeouts = ClientTimeouts(connect: 5, read: 10, total: 30),
                        apiKey: String? = nil, caCertificateFile: String? = nil) throws -> ClusterStatus
{
    let outgoing = try statusRequest(endpoint: endpoint, settings: CallSettings(
        timeouts: timeouts, apiKey: apiKey, caCertificateFile: caCertificateFile))
    let response = try BlockingResponse(outgoing)
    defer { response.close() }
    let body = try response.readAll()
    return try status(from: HTTPClientResponse(status: response.status, headers: response.headers, body: body),
                      of: response.peer)
}

/// The status as a text table for a terminal:
///
///     model llama-2-7b, context 4096, ready
///     requests 12 (1 failed, 2 active, 0 queued), tokens 400 prompt / 321 generated, 7.3 tokens/s
///
///     WORKER        STATE    LAYERS  THREADS  TOKENS  TOKENS/S  HEARTBEAT  ADDRESS
///     w1            ready    0-15    8        120     12.5      0.4 s      tcp://10.0.0.1:5555
///     w3 (standby)  standby  -       8        0       0.0       0.3 s      tcp://10.0.0.3:5555
///
///     WARNING: the endpoint runs without API keys on a network address (insecure: true)
///
/// A standby is marked after its name (it keeps the mark when it has taken over layers); a
/// draining server says so on the first line.
public func formatStatusTable(_ status: ClusterStatus) -> String {
    let metrics = status.metrics
    var output = "model \(status.model), context \(status.contextLength), \(status.ready ? "ready" : "NOT READY")"
    output += status.draining ? ", draining (new requests are refused)\n" : "\n"
    output += "requests \(metrics.requestsTotal) (\(metrics.requestsFailed) failed, \(metrics.requestsActive) active, "
    output += "\(metrics.queueLength) queued), tokens \(metrics.promptTokensTotal) prompt / "
    output += "\(metrics.generatedTokensTotal) generated, \(formatRate(metrics.tokensPerSecond)) tokens/s\n\n"

    let header = ["WORKER", "STATE", "LAYERS", "THREADS", "TOKENS", "TOKENS/S", "HEARTBEAT", "ADDRESS"]
    let rows = status.workers.map { worker in
        [
            worker.standby ? "\(worker.name) (standby)" : worker.name,
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
    if status.insecure {
        output += "\nWARNING: the endpoint runs without API keys on a network address (insecure: true)\n"
    }
    return output
}

func formatRate(_ value: Double) -> String {
    guard value.isFinite else { return "-" }
    return String(format: "%.1f", value)
}
