import LlamaModel
import Synchronization

/// Seconds on the monotonic clock (the scheduler's time).
public func monotonicNow() -> Double { monotonicSeconds() }

/// Whether new requests are taken.
public enum Admission: Sendable, Equatable {
    /// Run at once or queue for a slot.
    case open
    /// Refuse with HTTP 503 and a `Retry-After` of `retryAfter` seconds.
    case closed(String, retryAfter: Int)
}

/// The thread-safe side of a backend: requests and cancellations from any thread go into a
/// locked inbox that the serving loop drains; the loop publishes what `/health`, `/status`
/// and `/slots` show. Both the cluster coordinator and the one-process server use it.
public final class ServingFrontend: Sendable {
    /// A request on its way to the serving loop.
    public struct Pending: Sendable {
        public let id: Int
        public let job: CompletionJob
        public let seed: UInt64
        public let sink: AsyncThrowingStream<CompletionEvent, Error>.Continuation
        public let submittedAt: Double
    }

    /// What the loop publishes.
    public struct Snapshot: Sendable {
        public var health = HealthReport(ready: false)
        public var counters = BackendCounters()
        public var slots: [SlotStatus] = []
        public var admission = Admission.closed("starting", retryAfter: 1)
        /// Requests waiting for a slot.
        public var queued = 0
        public var stageSummary = ""
        /// The most frames that were in the pipeline at once since the start.
        public var peakFramesInFlight = 0

        public init() {}
    }

    private struct Inbox {
        var incoming: [Pending] = []
        var cancelled: [Int] = []
        var nextID = 0
        var snapshot = Snapshot()
    }

    private let inbox = Mutex(Inbox())
    public let limits: JobLimits
    /// Most requests waiting for a slot; more get HTTP 503 with `Retry-After`.
    public let maxQueue: Int
    private let wake: @Sendable () -> Void

    /// - Parameter wake: interrupts the serving loop's wait (called after every submission
    ///   and cancellation).
    public init(limits: JobLimits, maxQueue: Int, wake: @escaping @Sendable () -> Void) {
        self.limits = limits
        self.maxQueue = maxQueue
        self.wake = wake
    }

    // MARK: - Any thread

    /// Checks `job` and hands it to the serving loop.
    /// - Throws: ``BackendError`` when the job is invalid or requests are not taken now.
    public func submit(_ job: CompletionJob) throws -> AsyncThrowingStream<CompletionEvent, Error> {
        let checked = try limits.validate(job)
        // Room for seed + choice without wrapping into the next request's seeds.
        let seed = job.parameters.seed ?? UInt64.random(in: 0...(UInt64(Int64.max) - 1024))
        let id = try inbox.withLock { box -> Int in
            if case let .closed(message, retryAfter) = box.snapshot.admission {
                throw BackendError.unavailable(message, retryAfter: retryAfter)
            }
            guard box.snapshot.queued + box.incoming.count < maxQueue else {
                throw BackendError.unavailable("the queue is full (\(maxQueue) requests wait for a slot)", retryAfter: 1)
            }
            box.nextID += 1
            return box.nextID
        }
        let (stream, sink) = AsyncThrowingStream<CompletionEvent, Error>.makeStream()
        sink.onTermination = { [weak self] reason in
            guard case .cancelled = reason, let self else { return }
            self.inbox.withLock { $0.cancelled.append(id) }
            self.wake()
        }
        let pending = Pending(id: id, job: checked, seed: seed, sink: sink, submittedAt: monotonicNow())
        inbox.withLock { $0.incoming.append(pending) }
        wake()
        return stream
    }

    public var snapshot: Snapshot { inbox.withLock { $0.snapshot } }

    // MARK: - The serving loop

    /// New requests and cancellations since the last call.
    public func take() -> (incoming: [Pending], cancelled: [Int]) {
        inbox.withLock { box in
            defer {
                box.incoming.removeAll()
                box.cancelled.removeAll()
            }
            return (box.incoming, box.cancelled)
        }
    }

    /// Replaces what the status routes show.
    public func publish(_ snapshot: Snapshot) {
        inbox.withLock { box in
            box.snapshot = snapshot
            box.snapshot.counters.queueLength += box.incoming.count
        }
    }

    /// Ends every request not yet taken by the loop with `error` (at shutdown).
    public func failPending(_ error: Error) {
        for p in take().incoming { p.sink.finish(throwing: error) }
    }
}

extension ServingCore {
    /// Moves the frontend's new requests and cancellations into the core.
    public func takeInbox(from frontend: ServingFrontend, now: Double) {
        let (incoming, cancelled) = frontend.take()
        for p in incoming {
            do {
                try submit(id: p.id, job: p.job, seed: p.seed, sink: p.sink, now: now)
            } catch {
                p.sink.finish(throwing: BackendError.invalidRequest("\(error)", param: nil))
            }
        }
        for id in cancelled { cancel(requestID: id) }
    }

    /// The slots as `/slots` shows them.
    public func slotStatuses() -> [SlotStatus] {
        (0..<settings.slotCount).map { i in
            let occupant = table.occupant(slot: i)
            return SlotStatus(id: i, contextLength: settings.contextLength, isProcessing: occupant != nil,
                              cachedTokens: table.cachedCount(slot: i), requestID: occupant?.request.id)
        }
    }

    /// Updates gauges and counters for a snapshot.
    public func countersNow(_ now: Double) -> BackendCounters {
        metrics.tick(now: now, active: activeRequests, queued: queueLength)
        return metrics.counters
    }
}
