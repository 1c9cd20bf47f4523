import Foundation
import Hummingbird
import LlamaClient
import NIOCore
import Testing

/// Servers that misbehave in ways the real endpoint does not: streams cut short, bodies of the
/// wrong kind, endless lines, replies that trickle. Each case runs through both the blocking
/// and the async client.
@Suite("LlamaClient against misbehaving servers", .timeLimit(.minutes(1)))
struct ScriptedServerTests {
    /// One event of a completion stream.
    static func event(_ text: String, finish: String? = nil) -> String {
        let reason = finish.map { "\"\($0)\"" } ?? "null"
        let usage = finish == nil ? "" : #", "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}"#
        return #"data: {"choices": [{"index": 0, "text": "\#(text)", "finish_reason": \#(reason)}]\#(usage)}"# + "\n\n"
    }

    /// The error both clients throw for a completion from `url`, or nil when both succeed.
    static func completionErrors(_ url: String) async -> (blocking: LlamaClientError?, async: LlamaClientError?) {
        let blocking = await #expect(throws: LlamaClientError.self) {
            _ = try await onThread { try streamCompletion(endpoint: url, prompt: "x", timeouts: ClientTimeouts(read: 5)) { _ in } }
        }
        let async = await #expect(throws: LlamaClientError.self) {
            _ = try await LlamaEndpoint(url).streamCompletion(prompt: "x", timeouts: ClientTimeouts(read: 5)) { _ in }
        }
        return (blocking, async)
    }

    @Test("a well-formed scripted stream passes (the cases below fail for their own reason only)")
    func wellFormed() async throws {
        let body = ": keep-alive\r\n\r\n" + Self.event("a") + Self.event("b", finish: "stop") + "data: [DONE]\n\n"
        try await withScriptedServer({ router in
            router.post("/v1/completions") { _, _ in scriptedResponse(body) }
        }) { url in
            var pieces: [String] = []
            let result = try await LlamaEndpoint(url).streamCompletion(prompt: "x") { pieces.append($0) }
            #expect(pieces == ["a", "b"] && result.finishReason == "stop" && result.usage.totalTokens == 3)
            let blocking = try await onThread { try streamCompletion(endpoint: url, prompt: "x") { _ in } }
            #expect(blocking.finishReason == "stop")
        }
    }

    @Test("a stream that ends without its final [DONE] event is an error naming the server")
    func missingDone() async throws {
        let body = Self.event("a") + Self.event("b", finish: "stop")
        try await withScriptedServer({ router in
            router.post("/v1/completions") { _, _ in scriptedResponse(body) }
        }) { url in
            let port = url.split(separator: ":").last.map(String.init) ?? ""
            let expected = LlamaClientError.malformedResponse(
                "the stream from 127.0.0.1:\(port) ended after 2 event(s) without its final [DONE] event")
            let errors = await Self.completionErrors(url)
            #expect(errors.blocking == expected)
            #expect(errors.async == expected)
        }
    }

    @Test("a 200 reply that is not an event stream is an error")
    func notAnEventStream() async throws {
        try await withScriptedServer({ router in
            router.post("/v1/completions") { _, _ in scriptedResponse(#"{"choices": []}"#, contentType: "application/json") }
        }) { url in
            let errors = await Self.completionErrors(url)
            for error in [errors.blocking, errors.async] {
                guard case let .malformedResponse(message)? = error else {
                    Issue.record("expected malformedResponse, got \(String(describing: error))")
                    continue
                }
                #expect(message.hasSuffix("answered a streamed completion with application/json instead of text/event-stream"))
            }
        }
    }

    @Test("an error status with a plain-text body gives that text; with JSON, its error message")
    func errorBodies() async throws {
        try await withScriptedServer({ router in
            router.post("/v1/completions") { _, _ in
                scriptedResponse("upstream is down\n", status: .badGateway, contentType: "text/plain")
            }
            router.get("/status") { _, _ in
                scriptedResponse(#"{"error": {"message": "no workers yet", "type": "unavailable"}}"#,
                                 status: .serviceUnavailable, contentType: "application/json")
            }
        }) { url in
            let errors = await Self.completionErrors(url)
            #expect(errors.blocking == .httpStatus(502, message: "upstream is down"))
            #expect(errors.async == .httpStatus(502, message: "upstream is down"))
            await #expect(throws: LlamaClientError.httpStatus(503, message: "no workers yet")) {
                _ = try await LlamaEndpoint(url).status()
            }
            await #expect(throws: LlamaClientError.httpStatus(503, message: "no workers yet")) {
                _ = try await onThread { try fetchStatus(endpoint: url) }
            }
        }
    }

    @Test("an event line without end is cut off at the splitter's limit")
    func endlessLine() async throws {
        // 2 MiB of "x" after "data: ", sent in 64 KiB pieces, never a line ending.
        let piece = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 << 10)
        try await withScriptedServer({ router in
            router.post("/v1/completions") { _, _ in
                Response(status: .ok, headers: [.contentType: "text/event-stream"], body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "data: "))
                    for _ in 0 ..< 32 { try await writer.write(piece) }
                    try await writer.finish(nil)
                })
            }
        }) { url in
            let errors = await Self.completionErrors(url)
            let limit = ServerSentEventSplitter.defaultMaximumLineBytes
            let port = url.split(separator: ":").last.map(String.init) ?? ""
            let expected = LlamaClientError.malformedResponse(
                "a line of the event stream is longer than \(limit) bytes (from 127.0.0.1:\(port))")
            #expect(errors.blocking == expected)
            #expect(errors.async == expected)
        }
    }

    @Test("a reply that trickles in is cut off by the total timeout, not only the read timeout")
    func totalTimeout() async throws {
        try await withScriptedServer({ router in
            router.get("/status") { _, _ in
                Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody { writer in
                    // One byte every 50 ms for 10 s: never idle for the read timeout.
                    for _ in 0 ..< 200 {
                        try await writer.write(ByteBuffer(string: " "))
                        try await Task.sleep(nanoseconds: 50_000_000)
                    }
                    try await writer.finish(nil)
                })
            }
        }) { url in
            let timeouts = ClientTimeouts(connect: 5, read: 1, total: 0.5)
            let started = Date()
            let error = await #expect(throws: LlamaClientError.self) {
                _ = try await LlamaEndpoint(url).status(timeouts: timeouts)
            }
            // Cut at 0.5 s; the margin is for a loaded machine (uncut, the reply takes 10 s).
            #expect(Date().timeIntervalSince(started) < 5)
            guard case let .timedOut(message)? = error else {
                Issue.record("expected timedOut, got \(String(describing: error))")
                return
            }
            #expect(message.hasSuffix("took longer than 0.5 s"))
            await #expect(throws: LlamaClientError.self) {
                _ = try await onThread { try fetchStatus(endpoint: url, timeouts: timeouts) }
            }
        }
    }
}
