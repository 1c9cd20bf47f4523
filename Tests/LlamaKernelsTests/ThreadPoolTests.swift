import TestSupport
import LlamaKernels
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Counts how often each index ran.
private final class IndexCounter: @unchecked Sendable {
    let counts: UnsafeMutablePointer<Atomic<Int>>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        counts = .allocate(capacity: capacity)
        for i in 0..<capacity { (counts + i).initialize(to: Atomic(0)) }
    }

    deinit {
        counts.deinitialize(count: capacity)
        counts.deallocate()
    }

    func hit(_ index: Int) { counts[index].add(1, ordering: .relaxed) }

    /// True when indices below `count` ran once each and none above; resets them.
    func checkAndReset(count: Int) -> Bool {
        var good = true
        for i in 0..<capacity {
            let value = counts[i].exchange(0, ordering: .relaxed)
            if value != (i < count ? 1 : 0) { good = false }
        }
        return good
    }
}

@Suite("Thread pool")
struct ThreadPoolTests {
    @Test("every index runs exactly once", arguments: [1, 2, 3, 4])
    func everyIndexOnce(threads: Int) {
        let pool = ThreadPool(threadCount: threads)
        #expect(pool.threadCount == threads)
        let counter = IndexCounter(capacity: 5000)
        for count in [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 100, 1000, 4999, 5000] {
            pool.parallelFor(count) { counter.hit($0) }
            #expect(counter.checkAndReset(count: count), "\(threads) threads, count \(count)")
        }
    }

    @Test("many back-to-back loops")
    func repeatedLoops() {
        let pool = ThreadPool(threadCount: 3)
        let counter = IndexCounter(capacity: 64)
        var bad = 0
        for iteration in 0..<20000 {
            let count = iteration % 64
            pool.parallelFor(count) { counter.hit($0) }
            if !counter.checkAndReset(count: count) { bad += 1 }
        }
        #expect(bad == 0)
    }

    @Test("loops after the workers went to sleep")
    func afterSleeping() {
        let pool = ThreadPool(threadCount: 3, spinIterations: 0)
        let counter = IndexCounter(capacity: 40)
        for iteration in 0..<200 {
            if iteration % 20 == 0 { usleep(2000) }
            pool.parallelFor(40) { counter.hit($0) }
            #expect(counter.checkAndReset(count: 40))
        }
    }

    @Test("results written by workers are visible to the caller")
    func visibility() {
        let pool = ThreadPool(threadCount: 2)
        let buffer = UnsafeMutablePointer<Int>.allocate(capacity: 1000)
        defer { buffer.deallocate() }
        for round in 0..<500 {
            pool.parallelFor(1000) { buffer[$0] = $0 &* round }
            var sum = 0
            for i in 0..<1000 { sum &+= buffer[i] }
            #expect(sum == round * 999 * 1000 / 2)
        }
    }

    @Test("pools shut down their threads")
    func shutdown() {
        let counter = IndexCounter(capacity: 10)
        for threads in 1...4 {
            for _ in 0..<25 {
                let pool = ThreadPool(threadCount: threads, spinIterations: threads == 3 ? 0 : 100)
                pool.parallelFor(10) { counter.hit($0) }
                #expect(counter.checkAndReset(count: 10))
            }
        }
    }
}
