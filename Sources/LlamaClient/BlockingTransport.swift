import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

// MARK: - Blocking transport
//
// The blocking functions (`streamCompletion(endpoint:...)`, `fetchStatus`, `request`) use
// AsyncHTTPClient's event-loop API (`execute(request:delegate:deadline:)`) with a response
// delegate that hands each body piece to the calling thread through a condition variable, and
// lets NIO read on only once the caller has taken that piece (so at most one piece waits,
// whatever the server sends). The calling thread waits on that condition; nothing in between
// needs a Swift concurrency thread, so a blocking call made from inside a task cannot deadlock
// even when every thread of the cooperative pool is blocked in such calls (waiting for a `Task`
// with a semaphore could). They must not be called on a NIO event loop thread (an event loop
// cannot wait for itself).

extension OutgoingRequest {
    /// The request for AsyncHTTPClient's event-loop API.
    func eventLoopRequest() throws -> HTTPClient.Request {
        do {
            return try HTTPClient.Request(url: url.absoluteString, method: method, headers: headers,
                                          body: body.map { .bytes($0) })
        } catch {
            throw transportError(error)
        }
    }
}

/// A response whose body the calling thread reads piece by piece. ``close()`` it when done: it
/// cancels an unfinished request (closing the connection) and shuts the call's client down.
/// One thread uses it at a time.
final class BlockingResponse {
    let status: Int
    let headers: [(name: String, value: String)]
    private let request: OutgoingRequest
    private let client: HTTPClient
    private let task: HTTPClient.Task<Void>
    private let handoff: BodyHandoff
    private var closed = false

    /// Sends `request` and waits for the response head.
    init(_ request: OutgoingRequest) throws {
        let prepared = try request.eventLoopRequest()
        let client = try request.makeClient()
        let handoff = BodyHandoff()
        let task = client.execute(request: prepared, delegate: handoff, deadline: request.deadline)
        let head: HTTPResponseHead
        do {
            head = try handoff.waitForHead()
        } catch {
            Self.close(task: task, client: client, handoff: handoff)
            throw request.transportError(error)
        }
        self.request = request
        self.client = client
        self.handoff = handoff
        self.task = task
        status = Int(head.status.code)
        headers = head.headers.lowercasedFields
    }

    deinit { close() }

    /// The address the request went to, `host:port`.
    var peer: String { request.url.peer }

    /// The next piece of the body; nil at its end.
    func nextChunk() throws -> ByteBuffer? {
        do {
            return try handoff.nextChunk()
        } catch {
            throw request.transportError(error)
        }
    }

    /// The rest of the body, at most `limit` bytes.
    func readAll(limit: Int = bodyLimit) throws -> [UInt8] {
        var body: [UInt8] = []
        while let chunk = try nextChunk() {
            guard body.count + chunk.readableBytes <= limit else {
                throw LlamaClientError.malformedResponse("the body from \(request.url.peer) is larger than \(limit) bytes")
            }
            body.append(contentsOf: chunk.readableBytesView)
        }
        return body
    }

    /// Ends the request (if it is still running) and shuts the client down; later calls do nothing.
    func close() {
        guard !closed else { return }
        closed = true
        Self.close(task: task, client: client, handoff: handoff)
    }

    private static func close(task: HTTPClient.Task<Void>, client: HTTPClient, handoff: BodyHandoff) {
        // A piece the reader never took holds AsyncHTTPClient back: release it first, or the
        // cancellation would wait for it (and this thread for the cancellation) forever.
        handoff.abandon()
        task.cancel()  // no effect on a finished request
        _ = try? task.futureResult.wait()
        // Throws only `alreadyShutdown`; this is the one place this client is shut down.
        try? client.syncShutdown()
    }
}

/// Receives the response on an event loop and hands it to the one thread that reads it.
///
/// `@unchecked Sendable`: AsyncHTTPClient calls the delegate methods on the request's event
/// loop while the reading thread calls ``waitForHead()`` and ``nextChunk()``; every stored
/// property is read and written only while holding `condition` (an `NSCondition`, which is
/// also the lock), and promises are completed after releasing it.
private final class BodyHandoff: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = Void

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var head: HTTPResponseHead?
    // Guarded by `condition`: the piece the reader has not taken yet, and the promise that lets
    // AsyncHTTPClient read on once it has.
    private var pending: (buffer: ByteBuffer, taken: EventLoopPromise<Void>)?
    // Guarded by `condition`: how the request ended, once it has.
    private var outcome: Result<Void, Error>?
    // Guarded by `condition`: the reader has gone; later pieces are dropped as they come.
    private var abandoned = false

    func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        condition.withLock {
            self.head = head
            condition.broadcast()
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        // The next piece is asked for only once the reader has taken this one.
        let taken = task.eventLoop.makePromise(of: Void.self)
        let keep = condition.withLock {
            guard !abandoned else { return false }
            pending = (buffer, taken)
            condition.broadcast()
            return true
        }
        if !keep { taken.succeed(()) }
        return taken.futureResult
    }

    /// The reader will take no more pieces: lets go of the one waiting, and of any still to come.
    func abandon() {
        let dropped = condition.withLock {
            abandoned = true
            defer { pending = nil }
            return pending?.taken
        }
        dropped?.succeed(())
    }

    func didReceiveError(task: HTTPClient.Task<Void>, _ error: Error) {
        let dropped = condition.withLock {
            outcome = .failure(error)
            defer { pending = nil }
            condition.broadcast()
            return pending?.taken
        }
        dropped?.succeed(())
    }

    func didFinishRequest(task: HTTPClient.Task<Void>) throws {
        condition.withLock {
            if outcome == nil { outcome = .success(()) }
            condition.broadcast()
        }
    }

    /// Waits for the response head.
    func waitForHead() throws -> HTTPResponseHead {
        condition.lock()
        defer { condition.unlock() }
        while head == nil, outcome == nil { condition.wait() }
        if let head { return head }
        if case let .failure(error)? = outcome { throw error }
        throw LlamaClientError.malformedResponse("the request ended without a response")
    }

    /// Waits for the next piece of the body; nil at its end.
    func nextChunk() throws -> ByteBuffer? {
        condition.lock()
        while pending == nil, outcome == nil { condition.wait() }
        if let piece = pending {
            pending = nil
            condition.unlock()
            piece.taken.succeed(())
            return piece.buffer
        }
        let result = outcome
        condition.unlock()
        switch result {
        case let .failure(error)?: throw error
        default: return nil
        }
    }
}
