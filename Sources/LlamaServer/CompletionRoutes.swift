import Foundation
import Hummingbird
import LlamaInference
import Logging

/// A request ready to run: its job (prompt tokenized), how to answer, and the prompt text
/// `echo` repeats.
struct PreparedRequest {
    var job: CompletionJob
    var stream: Bool
    var format: ResponseFormat
    /// For `echo`: the prompt's text, and how many characters the tokenizer's space prefix
    /// adds before it (offsets are counted in the client's text).
    var echoText: String?
    var echoPrefix = 0
    /// The request's names of the backend's parameters (`prompt` is `messages` in chat).
    var fields: [String: String]
}

extension RouteHandlers {
    // MARK: - Preparing

    func prepareCompletion(_ json: JSONValue) throws -> PreparedRequest {
        let parsed = try CompletionRequest(json: json, defaultMaxTokens: options.completionDefaultMaxTokens)
        var job = parsed.settings.job
        var echoText: String?, prefix = 0
        switch parsed.prompt {
        case let .text(text):
            job.promptTokens = backend.tokenize(text, addBOS: true)
            if job.echo {
                echoText = text
                let bytes = job.promptTokens.flatMap { id -> [UInt8] in
                    id >= 0 && Int(id) < backend.info.vocabularySize ? backend.piece(id) : []
                }
                prefix = bytes.count == text.utf8.count + 1 && bytes.first == 0x20 ? 1 : 0
            }
        case let .tokens(ids):
            job.promptTokens = ids
            if job.echo {
                let valid = ids.allSatisfy { $0 >= 0 && Int($0) < backend.info.vocabularySize }
                echoText = valid ? String(decoding: ids.flatMap { backend.piece($0) }, as: UTF8.self) : ""
            }
        }
        let format = ResponseFormat(kind: .completion, model: backend.info.name, created: LlamaHTTPServer.now(),
                                    logprobs: job.logprobs != nil)
        return PreparedRequest(job: job, stream: parsed.settings.stream, format: format, echoText: echoText,
                               echoPrefix: prefix, fields: ["max_tokens": parsed.settings.maxTokensKey])
    }

    func prepareChat(_ json: JSONValue) throws -> PreparedRequest {
        let parsed = try ChatCompletionRequest(json: json, defaultMaxTokens: options.chatDefaultMaxTokens)
        var job = parsed.settings.job
        let backend = self.backend
        job.promptTokens = try chatTemplate.promptTokens(parsed.messages, bos: backend.info.bosID, eos: backend.info.eosID,
                                                         special: { backend.specialTokenID($0) }) {
            backend.tokenize($0, addBOS: false)
        }
        let format = ResponseFormat(kind: .chat, model: backend.info.name, created: LlamaHTTPServer.now(),
                                    logprobs: job.logprobs != nil)
        return PreparedRequest(job: job, stream: parsed.settings.stream, format: format,
                               fields: ["prompt": "messages", "max_tokens": parsed.settings.maxTokensKey, "logprobs": "top_logprobs"])
    }

    // MARK: - Answering

    func respond(_ p: PreparedRequest) async throws -> Response {
        let events: AsyncThrowingStream<CompletionEvent, Error>
        do {
            events = try backend.submit(p.job)
        } catch {
            throw APIError(error, fields: p.fields)
        }
        if p.stream { return streamingResponse(p, events: events) }
        var choices = [ChoiceResult](repeating: ChoiceResult(), count: p.job.choices)
        var promptTokens: [TokenLogprob] = []
        do {
            for try await event in events {
                switch event {
                case let .prompt(tokens):
                    promptTokens = tokens
                case let .text(c, text, tokens):
                    choices[c].text += text
                    choices[c].tokens += tokens
                case let .finished(c, reason, n):
                    choices[c].finishReason = reason
                    choices[c].completionTokens = n
                }
            }
        } catch {
            if error is CancellationError || Task.isCancelled { throw CancellationError() }
            logger.warning("completion failed: \(error)")
            throw APIError(error, fields: p.fields)
        }
        if Task.isCancelled { throw CancellationError() }
        guard choices.allSatisfy({ $0.finishReason != nil }) else {
            throw APIError.internalError("the model runner ended the job without reporting how it finished")
        }
        if let echo = p.echoText {
            let prompt = promptTokens
            for i in choices.indices {
                choices[i].text = echo + choices[i].text
                choices[i].tokens = prompt + choices[i].tokens
            }
        }
        let usage = CompletionUsage(promptTokens: p.job.promptTokens.count,
                                    completionTokens: choices.reduce(0) { $0 + $1.completionTokens })
        return jsonResponse(p.format.whole(choices, usage: usage, offset: -p.echoPrefix))
    }

    /// What the generation task hands to the task writing the stream.
    enum StreamItem: Sendable {
        case event(CompletionEvent)
        case failed(APIError)
        case ended
        case keepAlive
    }

    /// Server-sent events: one `data: {chunk}` per piece of text of a choice, a final chunk
    /// per choice with its finish reason (the last carrying the usage), then `data: [DONE]`.
    /// A failure is sent as `data: {"error": ...}` and ends the stream. While no text flows
    /// (a long prompt, a queue, a recovery), an SSE comment line is sent every
    /// ``LlamaHTTPServer/Options/streamKeepAliveInterval`` seconds: writing is how a closed
    /// connection is noticed, and a failed write cancels the job.
    func streamingResponse(_ p: PreparedRequest, events: AsyncThrowingStream<CompletionEvent, Error>) -> Response {
        let logger = self.logger
        let keepAliveNanoseconds = UInt64(max(options.streamKeepAliveInterval, 0.001) * 1e9)
        let format = p.format
        let body = ResponseBody { writer in
            let (items, sink) = AsyncStream<StreamItem>.makeStream()
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            for try await e in events { sink.yield(.event(e)) }
                            sink.yield(.ended)
                        } catch {
                            if !(error is CancellationError) {
                                logger.warning("streamed completion failed: \(error)")
                                sink.yield(.failed(APIError(error, fields: p.fields)))
                            }
                        }
                        sink.finish()
                    }
                    group.addTask {
                        while true {
                            try await Task.sleep(nanoseconds: keepAliveNanoseconds)
                            sink.yield(.keepAlive)
                        }
                    }
                    func write(_ value: JSONValue) async throws {
                        try await writer.write(ByteBuffer(string: "data: \(value.serialized)\n\n"))
                    }
                    var offsets = [Int](repeating: 0, count: p.job.choices)
                    var finished = 0, completionTokens = 0
                    for c in 0..<p.job.choices {
                        if let opening = format.openingChunk(choice: c) { try await write(opening) }
                    }
                    if let echo = p.echoText, !format.logprobs {
                        for c in 0..<p.job.choices { try await write(format.textChunk(choice: c, text: echo, tokens: [], offset: 0)) }
                    }
                    var wrote = true
                    streaming: for await item in items {
                        switch item {
                        case let .event(.prompt(tokens)):
                            for c in 0..<p.job.choices {
                                try await write(format.textChunk(choice: c, text: p.echoText ?? "", tokens: tokens, offset: -p.echoPrefix))
                                offsets[c] = tokens.reduce(0) { $0 + scalarCount($1.bytes) } - p.echoPrefix
                            }
                            wrote = true
                        case let .event(.text(c, text, tokens)):
                            try await write(format.textChunk(choice: c, text: text, tokens: tokens, offset: offsets[c]))
                            offsets[c] += tokens.reduce(0) { $0 + scalarCount($1.bytes) }
                            wrote = true
                        case let .event(.finished(c, reason, n)):
                            finished += 1
                            completionTokens += n
                            let usage = finished == p.job.choices
                                ? CompletionUsage(promptTokens: p.job.promptTokens.count, completionTokens: completionTokens) : nil
                            try await write(format.finalChunk(choice: c, finishReason: reason, usage: usage))
                            wrote = true
                        case .ended:
                            if finished == p.job.choices {
                                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                            } else {
                                try await write(APIError.internalError("the model runner ended the job without finishing it").json)
                            }
                            break streaming
                        case let .failed(error):
                            try await write(error.json)
                            break streaming
                        case .keepAlive:
                            if !wrote { try await writer.write(ByteBuffer(string: ": keep-alive\n\n")) }
                            wrote = false
                        }
                    }
                    // Stops the keep-alive ticks, and the job if the stream ended early.
                    group.cancelAll()
                }
                try await writer.finish(nil)
            } catch {
                // A write failed: the client went away. Leaving the task group cancelled the job.
                logger.debug("stream ended early: \(error)")
            }
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}
