import Foundation
import LlamaSampling

// MARK: - Async calls

/// An endpoint of the cluster's HTTP API and how to reach it, for async code.
///
/// Each call runs on AsyncHTTPClient's async API with a client of its own, shut down before the
/// call returns (see `Transport.swift`); nothing blocks a thread. The blocking functions
/// (``streamCompletion(endpoint:prompt:parameters:maxTokens:stop:timeouts:apiKey:caCertificateFile:onText:)``,
/// ``fetchStatus(endpoint:timeouts:apiKey:caCertificateFile:)``,
/// ``request(method:url:body:headers:timeouts:apiKey:caCertificateFile:)``) do the same requests
/// for threads that may block.
public struct LlamaEndpoint: Sendable, Equatable {
    /// Base URL, e.g. `http://127.0.0.1:8080` or `https://host:8443/base`.
    public var url: String
    /// Sent as `Authorization: Bearer KEY`.
    public var apiKey: String?
    /// A PEM file of CA certificates to trust for `https://` besides the system's.
    public var caCertificateFile: String?

    public init(_ url: String, apiKey: String? = nil, caCertificateFile: String? = nil) {
        self.url = url
        self.apiKey = apiKey
        self.caCertificateFile = caCertificateFile
    }

    private func settings(_ timeouts: ClientTimeouts) -> CallSettings {
        CallSettings(timeouts: timeouts, apiKey: apiKey, caCertificateFile: caCertificateFile)
    }

    /// Streams a completion (`POST /v1/completions` with `"stream": true`), passing each piece
    /// of text to `onText` as it arrives, one at a time. Throwing from `onText`, or cancelling
    /// the task, closes the connection, which cancels the job on the server.
    /// - Returns: why generation ended ("stop" or "length") and the token counts.
    /// - Throws: as the blocking `streamCompletion`; `CancellationError` when the task is cancelled.
    public func streamCompletion(prompt: String, parameters: SamplingParameters = SamplingParameters(),
                                 maxTokens: Int = 16, stop: [String] = [], timeouts: ClientTimeouts = ClientTimeouts(),
                                 onText: (String) async throws -> Void) async throws
        -> (finishReason: String, usage: TokenUsage)
    {
        let outgoing = try completionRequest(endpoint: url, prompt: prompt, parameters: parameters,
                                             maxTokens: maxTokens, stop: stop, settings: settings(timeouts))
        return try await withResponse(outgoing) { response in
            var pieces = BodyPieces(response, of: outgoing)
            let peer = outgoing.url.peer
            guard response.status.code == 200 else {
                throw LlamaClientError.httpStatus(Int(response.status.code),
                                                  message: errorMessage(from: try await pieces.readAll()))
            }
            try CompletionStreamState.requireEventStream(contentType: response.headers.first(name: "content-type"),
                                                         peer: peer)
            var state = CompletionStreamState(peer: peer)
            while !state.isDone, let chunk = try await pieces.next() {
                for text in try state.texts(chunk.readableBytesView) { try await onText(text) }
            }
            // Should a cancelled task see the body end rather than fail, say that it was cancelled
            // rather than blame the stream for ending early.
            try Task.checkCancellation()
            if !state.isDone {
                for text in try state.textsAtEnd() { try await onText(text) }
            }
            return try state.result()
        }
    }

    /// Fetches `GET /status`.
    public func status(timeouts: ClientTimeouts = ClientTimeouts(connect: 5, read: 10, total: 30)) async throws -> ClusterStatus {
        let outgoing = try statusRequest(endpoint: url, settings: settings(timeouts))
        return try LlamaClient.status(from: await asyncRequest(outgoing), of: outgoing.url.peer)
    }

    /// Sends a request to `path` (appended to ``url``) and reads the whole response; a non-2xx
    /// status is not an error. As the blocking ``request(method:url:body:headers:timeouts:apiKey:caCertificateFile:)``.
    public func request(method: String, path: String, body: Data? = nil, headers: [String: String] = [:],
                        timeouts: ClientTimeouts = ClientTimeouts()) async throws -> HTTPClientResponse
    {
        let outgoing = try OutgoingRequest(method: method, url: try EndpointURL(url).appending(path),
                                           body: body.map { [UInt8]($0) }, headers: headers, settings: settings(timeouts))
        return try await asyncRequest(outgoing)
    }
}
