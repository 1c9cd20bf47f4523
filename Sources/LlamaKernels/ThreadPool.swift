import CLlamaKernels
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed set of persistent worker threads that run `parallelFor` loops with
/// very low per-call overhead.
///
/// The calling thread takes part in every loop, so a pool of `threadCount`
/// threads starts `threadCount - 1` workers; a pool of one thread runs loops
/// inline. Idle workers spin briefly on an atomic counter (so back-to-back
/// loops start within microseconds), then sleep on a condition variable.
///
/// `parallelFor` must not be called from inside a loop body of the same pool,
/// nor concurrently from several threads.
public final class ThreadPool: @unchecked Sendable {
    /// Threads taking part in each loop, the caller included.
    public let threadCount: Int

    private let state: PoolState
    private var workers: [pthread_t] = []

    /// Starts `threadCount - 1` worker threads.
    ///
    /// - Parameters:
    ///   - threadCount: threads per loop including the caller (at least 1).
    ///   - spinIterations: pause-instruction spins an idle worker makes before it sleeps.
    public init(threadCount: Int, spinIterations: Int = 4000) {
        precondition(threadCount >= 1, "a thread pool needs at least one thread")
        self.threadCount = threadCount
        self.state = PoolState(participants: threadCount, spinIterations: spinIterations)
        for _ in 1..<threadCount {
            let context = Unmanaged.passRetained(state).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, poolWorkerMain, context)
            precondition(status == 0, "pthread_create failed with \(status)")
            workers.append(thread)
        }
    }

    deinit {
        state.shutdown()
        for thread in workers {
            pthread_join(thread, nil)
        }
    }

    /// Runs `body(i)` exactly once for every `i` in `0..<count`, spread over the
    /// pool's threads in chunks, and returns when all calls have finished.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if threadCount == 1 || count == 1 {
            for index in 0..<count { body(index) }
            return
        }
        withoutActuallyEscaping(body) { escapableBody in
            state.run(count: count, body: escapableBody)
        }
    }
}

// MARK: - Shared state

/// State shared by the pool owner and its workers.
///
/// `cursor` packs the loop generation (high 32 bits) and the next chunk to hand
/// out (low 32 bits), so a worker that wakes late cannot take a chunk of a newer
/// loop while believing it belongs to an older one.
private final class PoolState: @unchecked Sendable {
    let participants: Int
    let spinIterations: Int

    let cursor = Atomic<Int>(0)
    let finishedChunks = Atomic<Int>(0)
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)

    // Written by the owner before publishing a generation through `cursor`.
    var body: ((Int) -> Void)?
    var count = 0
    var chunkSize = 1
    /// Read by workers before they own a chunk, hence atomic.
    let chunkCount = Atomic<Int>(0)

    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let condition: UnsafeMutablePointer<pthread_cond_t>

    init(participants: Int, spinIterations: Int) {
        self.participants = participants
        self.spinIterations = max(0, spinIterations)
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    static func generation(of cursorValue: Int) -> Int { cursorValue >> 32 }
    static func chunk(of cursorValue: Int) -> Int { cursorValue & 0xffff_ffff }
    /// Chunk value of a finished loop: above every chunk count, so no worker takes it.
    static let closed = 0xffff_ffff

    /// Owner side of one loop.
    func run(count: Int, body: @escaping (Int) -> Void) {
        let chunks = count <= participants * 16 ? count : participants * 4
        let size = (count + chunks - 1) / chunks
        self.body = body
        self.count = count
        self.chunkSize = size
        let chunkTotal = (count + size - 1) / size
        // Releasing: a worker that reads this count (acquiring) also sees the previous
        // loop's closing store below, so it cannot take a chunk of that loop with it.
        chunkCount.store(chunkTotal, ordering: .releasing)
        finishedChunks.store(0, ordering: .relaxed)

        let nextGeneration = (Self.generation(of: cursor.load(ordering: .relaxed)) + 1) & 0x7fff_ffff
        cursor.store(nextGeneration << 32, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }

        work(generation: nextGeneration)

        var spins = 0
        while finishedChunks.load(ordering: .acquiring) < chunkTotal {
            spins += 1
            if spins < 1 << 16 { lk_cpu_relax() } else { sched_yield() }
        }
        self.body = nil
        // Close the loop: a worker still holding its last cursor value (every chunk taken)
        // would otherwise, once the next loop's larger chunk count is stored but before its
        // generation is published, win the compare-exchange and run a chunk of the next loop
        // under this loop's generation, twice counted.
        cursor.store(nextGeneration << 32 | Self.closed, ordering: .sequentiallyConsistent)
    }

    /// Takes and runs chunks of `generation` until none is left.
    func work(generation: Int) {
        var current = cursor.load(ordering: .acquiring)
        while true {
            if Self.generation(of: current) != generation { return }
            let chunk = Self.chunk(of: current)
            if chunk >= chunkCount.load(ordering: .acquiring) { return }
            let (exchanged, original) = cursor.compareExchange(
                expected: current, desired: current + 1,
                successOrdering: .acquiring, failureOrdering: .acquiring)
            if !exchanged {
                current = original
                continue
            }
            // The chunk belongs to `generation`, whose loop cannot finish before
            // this chunk is reported, so its parameters are still in place.
            runChunk(chunk)
            finishedChunks.add(1, ordering: .releasing)
            current = cursor.load(ordering: .acquiring)
        }
    }

    /// Runs the indices of one chunk. Not inlined, so that this thread's
    /// reference to the loop body is released before the chunk is reported
    /// finished (the owner's non-escaping closure must be unreferenced when
    /// its loop returns).
    @inline(never)
    func runChunk(_ chunk: Int) {
        let begin = chunk * chunkSize
        let end = min(begin + chunkSize, count)
        let body = self.body!
        for index in begin..<end { body(index) }
    }

    /// Worker side: waits for new generations and helps with them until shutdown.
    func workerLoop() {
        var seen = Self.generation(of: cursor.load(ordering: .acquiring))
        while true {
            var current = cursor.load(ordering: .acquiring)
            var spins = 0
            while Self.generation(of: current) == seen && !stopping.load(ordering: .relaxed) {
                if spins < spinIterations {
                    spins += 1
                    lk_cpu_relax()
                } else {
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while Self.generation(of: cursor.load(ordering: .sequentiallyConsistent)) == seen
                        && !stopping.load(ordering: .sequentiallyConsistent)
                    {
                        pthread_cond_wait(condition, mutex)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                }
                current = cursor.load(ordering: .acquiring)
            }
            if stopping.load(ordering: .acquiring) { return }
            seen = Self.generation(of: current)
            work(generation: seen)
        }
    }

    func shutdown() {
        pthread_mutex_lock(mutex)
        stopping.store(true, ordering: .sequentiallyConsistent)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }
}

private func poolWorkerMain(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let state = Unmanaged<PoolState>.fromOpaque(context!).takeRetainedValue()
    state.workerLoop()
    return nil
}
