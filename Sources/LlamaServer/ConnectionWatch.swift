import Hummingbird
import NIOCore
import Synchronization

/// The request context of the endpoint: Hummingbird's core context and the connection the
/// request came on (to notice a client that hangs up).
public struct LlamaRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Cancels work when the client's side of its connection closes, without touching the
/// connection's request stream.
///
/// Hummingbird's `consumeWithCancellationOnInboundClose` watches by reading the request
/// stream past the body; cancelling that read when the work is done ends the stream, so the
/// server closed every keep-alive connection after its response, without `Connection: close`,
/// and a client's next request on it met a closed connection ("Remote end closed connection
/// without response"). Here a ``ConnectionCloseHandler`` in every connection's pipeline
/// reports the end of the client's input (or of the connection), and each request that runs
/// work registers a waiter for the time it runs.
final class ConnectionWatch: Sendable {
    private struct Entry {
        var closed = false
        var waiters: [Int: AsyncStream<Void>.Continuation] = [:]
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    /// Connections open now (their handlers remove them when they go).
    var openConnections: Int { state.withLock { $0.entries.count } }

    func opened(_ key: ObjectIdentifier) {
        state.withLock { s in if s.entries[key] == nil { s.entries[key] = Entry() } }
    }

    /// The client's input ended, or the connection closed: the work running for it is cancelled.
    func inputClosed(_ key: ObjectIdentifier) {
        let waiters = state.withLock { s -> [AsyncStream<Void>.Continuation] in
            guard s.entries[key] != nil else { return [] }
            s.entries[key]!.closed = true
            defer { s.entries[key]!.waiters.removeAll() }
            return Array(s.entries[key]!.waiters.values)
        }
        for w in waiters { w.finish() }
    }

    func removed(_ key: ObjectIdentifier) {
        inputClosed(key)
        state.withLock { _ = $0.entries.removeValue(forKey: key) }
    }

    /// Runs `operation`; if the client's side of `channel` closes first, `operation` is
    /// cancelled and `CancellationError` is thrown. A channel without a handler (a test's
    /// in-process router) is not watched.
    func cancellingOnClose<T: Sendable>(_ channel: any Channel, _ operation: @escaping @Sendable () async throws -> T)
        async throws -> T
    {
        let (closed, continuation) = AsyncStream<Void>.makeStream()
        let key = ObjectIdentifier(channel)
        let id = state.withLock { s -> Int? in
            guard s.entries[key] != nil else { return nil }
            let id = s.nextWaiter
            s.nextWaiter &+= 1
            if s.entries[key]!.closed {
                continuation.finish()
            } else {
                s.entries[key]!.waiters[id] = continuation
            }
            return id
        }
        guard let id else { return try await operation() }
        defer {
            state.withLock { _ = $0.entries[key]?.waiters.removeValue(forKey: id) }
            continuation.finish()
        }
        return try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                // Ends when the client's side closes, or when this task is cancelled (the work is done).
                for await _ in closed {}
                throw CancellationError()
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

/// In every connection's pipeline (after the HTTP codec): tells the ``ConnectionWatch`` when
/// the client's input ends and when the connection goes.
final class ConnectionCloseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let watch: ConnectionWatch

    init(watch: ConnectionWatch) { self.watch = watch }

    func handlerAdded(context: ChannelHandlerContext) { watch.opened(ObjectIdentifier(context.channel)) }
    func handlerRemoved(context: ChannelHandlerContext) { watch.removed(ObjectIdentifier(context.channel)) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { watch.inputClosed(ObjectIdentifier(context.channel)) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        watch.inputClosed(ObjectIdentifier(context.channel))
        context.fireChannelInactive()
    }
}
