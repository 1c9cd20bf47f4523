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

/// The request of a streamed completion.
func completionRequest(endpoint: String, prompt: String, parameters: SamplingParameters, maxTokens: Int,
                       stop: [String], settings: CallSettings) throws -> OutgoingRequest
{
    let url = try EndpointURL(endpoint).appending("/v1/completions")
    let body = try completionRequestBody(prompt: prompt, parameters: parameters, maxTokens: maxTokens,
                                         stop: stop, stream: true)
    return try OutgoingRequest(method: "POST", url: url, body: [UInt8](body),
                               headers: ["Accept": "text/event-stream"], settings: settings)
}

/// What the events of a completion stream carried so far.
struct CompletionStreamState {
    /// The server the stream comes from, `host:port`, for error messages.
    let peer: String
    var splitter = ServerSentEventSplitter()
    var finishReason: String?
    var usage: TokenUsage?
    /// Events with data seen so far.
    private(set) var events = 0

    init(peer: String) { self.peer = peer }

    var isDone: Bool { splitter.isDone }

    /// Checks that a 200 response to a streamed completion is an event stream.
    static func requireEventStream(contentType: String?, peer: String) throws {
        guard let contentType, contentType.lowercased().hasPrefix("text/event-stream") else {
            throw LlamaClientError.malformedResponse(
                "\(peer) answered a streamed completion with \(contentType ?? "no Content-Type") instead of text/event-stream")
        }
    }

    /// The texts of the events that the next piece of the body, `bytes`, completes.
    mutating func texts(_ bytes: some Collection<UInt8>) throws -> [String] {
        try naming { try $0.feed(bytes) }.compactMap { try text(of: $0) }
    }

    /// The texts of the events the end of the body completes.
    mutating func textsAtEnd() throws -> [String] {
        try naming { try $0.finish() }.compactMap { try text(of: $0) }
    }

    /// Runs `step` on the splitter, adding the server to the error of a line or event over the limit.
    private mutating func naming(_ step: (inout ServerSentEventSplitter) throws -> [ServerSentEventSplitter.Event])
        throws -> [ServerSentEventSplitter.Event]
    {
        do {
            return try step(&splitter)
        } catch let LlamaClientError.malformedResponse(message) {
            throw LlamaClientError.malformedResponse("\(message) (from \(peer))")
        }
    }

    /// The text of one event, if it has any.
    /// - Throws: ``LlamaClientError/streamError(_:)`` for an error event,
    ///   ``LlamaClientError/malformedResponse(_:)`` for an event not in the expected form.
    mutating func text(of event: ServerSentEventSplitter.Event) throws -> String? {
        guard case let .data(data) = event else { return nil }
        events += 1
        guard let chunk = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else {
            throw LlamaClientError.malformedResponse("an event from \(peer) is not a JSON object: \(data.prefix(200))")
        }
        if let error = chunk["error"] as? [String: Any] {
            throw LlamaClientError.streamError(error["message"] as? String ?? "unknown error")
        }
        guard let choices = chunk["choices"] as? [[String: Any]], let choice = choices.first else {
            throw LlamaClientError.malformedResponse("an event from \(peer) has no choices: \(data.prefix(200))")
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
        if let text = choice["text"] as? String, !text.isEmpty { return text }
        return nil
    }

    /// The outcome once the body has ended (or [DONE] came).
    /// - Throws: ``LlamaClientError/malformedResponse(_:)`` when the stream ended before its
    ///   final `[DONE]` event, or carried no finish reason or usage.
    func result() throws -> (finishReason: String, usage: TokenUsage) {
        guard isDone else {
            throw LlamaClientError.malformedResponse(
                "the stream from \(peer) ended after \(events) event(s) without its final [DONE] event")
        }
        guard let finishReason else {
            throw LlamaClientError.malformedResponse("the stream from \(peer) carried no finish_reason")
        }
        guard let usage else {
            throw LlamaClientError.malformedResponse("the stream from \(peer) carried no usage")
        }
        return (finishReason, usage)
    }
}

/// Streams a completion from an OpenAI-compatible endpoint (`POST {endpoint}/v1/completions`
/// with `"stream": true`), passing each piece of text to `onText` as it arrives.
///
/// This blocks the calling thread, and calls `onText` on it (see ``LlamaEndpoint`` for the
/// async form). It must not run on a NIO event loop thread.
///
/// Throwing from `onText` stops reading and closes the connection, which cancels the job
/// on the server; the error comes out as thrown.
/// - Parameters:
///   - endpoint: base URL, e.g. `http://127.0.0.1:8080` or `https://host:8443`.
///   - maxTokens: upper bound of generated tokens.
///   - stop: strings that end generation (not included in the text).
///   - apiKey: sent as `Authorization: Bearer KEY`.
///   - caCertificateFile: a PEM file of CA certificates to trust for `https://` besides the
///     system's (for a server with a self-signed certificate).
/// - Returns: why generation ended ("stop" or "length") and the token counts.
/// - Throws: ``LlamaClientError``; ``LlamaClientError/httpStatus(_:message:)`` with the server's
///   message for a refused request, ``LlamaClientError/streamError(_:)`` for a failure mid-stream,
///   ``LlamaClientError/malformedResponse(_:)`` for a stream that ends without its final event.
public func streamCompletion(endpoint: String, prompt: String, parameters: SamplingParameters = SamplingParameters(),
                             maxTokens: Int = 16, stop: [String] = [], timeouts: ClientTimeouts = ClientTimeouts(),
                             apiKey: String? = nil, caCertificateFile: String? = nil,
                             onText: (String) throws -> Void) throws -> (finishReason: String, usage: TokenUsage)
{
    let outgoing = try completionRequest(
        endpoint: endpoint, prompt: prompt, parameters: parameters, maxTokens: maxTokens, stop: stop,
        settings: CallSettings(timeouts: timeouts, apiKey: apiKey, caCertificateFile: caCertificateFile))
    let response = try BlockingResponse(outgoing)
    defer { response.close() }
    guard response.status == 200 else {
        throw LlamaClientError.httpStatus(response.status, message: errorMessage(from: try response.readAll()))
    }
    try CompletionStreamState.requireEventStream(contentType: response.header("content-type"), peer: response.peer)
    var state = CompletionStreamState(peer: response.peer)
    while !state.isDone, let chunk = try response.nextChunk() {
        for text in try state.texts(chunk.readableBytesView) { try onText(text) }
    }
    if !state.isDone {
        for text in try state.textsAtEnd() { try onText(text) }
    }
    return try state.result()
}

extension BlockingResponse {
    /// The first value of header `name` (lower case).
    func header(_ name: String) -> String? {
        headers.first(where: { $0.name == name })?.value
    }
}
