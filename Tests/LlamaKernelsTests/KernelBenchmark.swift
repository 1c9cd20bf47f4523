// A printing benchmark, not a test: it asserts nothing about speed and only runs
// when LLAMA_KERNELS_BENCHMARK=1 is set. Use a release build:
//
//   LLAMA_KERNELS_BENCHMARK=1 swift test -c release --filter KernelBenchmark

import TestSupport
import CLlamaKernels
import GGUF
import LlamaKernels
import Testing

#if canImport(Glibc)
import Glibc
#endif

private let benchmarkEnabled = getenv("LLAMA_KERNELS_BENCHMARK").map { String(cString: $0) == "1" } ?? false

private func seconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}

/// `value` rounded to `digits` decimals, for printing.
private func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    return "\((value * scale).rounded() / scale)"
}

/// Best wall-clock time of `repeats` runs.
private func bestTime(repeats: Int, _ body: () -> Void) -> Double {
    body()
    var best = Double.infinity
    for _ in 0..<repeats {
        let start = seconds()
        body()
        best = min(best, seconds() - start)
    }
    return best
}

/// A weight matrix of random quants with sane scales, generated without a float copy.
private final class RandomWeights {
    let matrix: WeightMatrix
    private let storage: UnsafeMutableRawPointer

    init(type: GGMLType, rows: Int, cols: Int) {
        var rng = TestRandom(seed: 99)
        let byteCount = type.byteCount(elements: cols) * rows
        storage = .allocate(byteCount: byteCount, alignment: 64)
        let words = storage.bindMemory(to: UInt64.self, capacity: byteCount / 8)
        for i in 0..<(byteCount / 8) { words[i] = rng.next() }
        // Random bytes are valid quants; scale fields (and F16 values) get sane halves.
        let halves: [UInt16] = (0..<4096).map { _ in floatToHalf(rng.uniform(0.001, 0.01)) }
        let raw = UnsafeMutableRawPointer(storage)
        switch type {
        case .f16:
            let values = raw.bindMemory(to: UInt16.self, capacity: byteCount / 2)
            for i in 0..<(byteCount / 2) { values[i] = halves[i & 4095] }
        default:
            let offsets: [Int] = type == .q4_K ? [0, 2] : type == .q6_K ? [208] : [0]
            for block in 0..<(byteCount / type.typeSize) {
                for offset in offsets {
                    raw.storeBytes(of: halves[block & 4095], toByteOffset: block * type.typeSize + offset, as: UInt16.self)
                }
            }
        }
        matrix = WeightMatrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(storage))
    }

    deinit { storage.deallocate() }
}

@Suite("KernelBenchmark")
struct KernelBenchmark {
    @Test("benchmark (prints figures; enable with LLAMA_KERNELS_BENCHMARK=1)", .enabled(if: benchmarkEnabled))
    func benchmark() {
        print("instruction set: \(KernelISA.current)")
        let pools = [ThreadPool(threadCount: 1), ThreadPool(threadCount: 2)]

        // Dispatch overhead of an empty loop.
        for pool in pools where pool.threadCount > 1 {
            let calls = 20000
            let time = bestTime(repeats: 3) { for _ in 0..<calls { pool.parallelFor(pool.threadCount) { _ in } } }
            print("parallelFor overhead, \(pool.threadCount) threads: \(fixed(time / Double(calls) * 1e6, 2)) us per call")
        }

        // How the work of a loop of 1 ms chunks is shared.
        for pool in pools where pool.threadCount > 1 {
            let caller = pthread_self()
            let byCaller = UnsafeMutablePointer<Int>.allocate(capacity: 64)
            for round in 0..<3 {
                pool.parallelFor(64) { index in
                    byCaller[index] = pthread_equal(pthread_self(), caller) != 0 ? 1 : 0
                    let start = seconds()
                    while seconds() - start < 0.001 {}
                }
                var count = 0
                for i in 0..<64 { count += byCaller[i] }
                print("round \(round): caller ran \(count) of 64 chunks with \(pool.threadCount) threads")
            }
            byCaller.deallocate()
        }

        // Decode: one activation row, weights streamed once.
        for (rows, cols) in [(11008, 4096), (28672, 8192)] {
            let scratch = MatmulScratch(maxCols: cols, maxBatch: 1)
            var rng = TestRandom(seed: 1)
            let input = rng.floats(cols)
            var output = [Float](repeating: 0, count: rows)
            for type in [GGMLType.q4_0, .q8_0, .q4_K, .q6_K, .f16] {
                if type == .f16 && rows > 20000 { continue }
                let weights = RandomWeights(type: type, rows: rows, cols: cols)
                for pool in pools {
                    let time = bestTime(repeats: 10) {
                        matmul(weights.matrix, input: input, batch: 1, output: &output, pool: pool, scratch: scratch)
                    }
                    let gbs = Double(weights.matrix.byteCount) / time / 1e9
                    print("matvec \(type) \(rows)x\(cols), \(pool.threadCount) threads: \(fixed(time * 1e3, 3)) ms, \(fixed(gbs, 1)) GB/s")
                }
            }
        }

        // Decode with Q4_0 repacked in groups of eight rows (lk_x8_pack) against the original
        // rows, the same split over the pool's threads, alternating.
        for (rows, cols) in [(11008, 4096), (28672, 8192)] {
            let weights = RandomWeights(type: .q4_0, rows: rows, cols: cols)
            let packed = UnsafeMutableRawPointer.allocate(byteCount: weights.matrix.byteCount, alignment: 64)
            defer { packed.deallocate() }
            let rowBytes = GGMLType.q4_0.byteCount(elements: cols)
            _ = lk_x8_pack(Int32(GGMLType.q4_0.rawValue), weights.matrix.data, rowBytes, Int64(rows), Int64(cols), packed)
            let typeId = Int32(GGMLType.q4_0.rawValue)
            let actRow = Int(lk_act_row_size(typeId, Int64(cols)))
            var rng = TestRandom(seed: 3)
            let input = rng.floats(cols)
            let encoded = UnsafeMutableRawPointer.allocate(byteCount: actRow, alignment: 64)
            defer { encoded.deallocate() }
            lk_quantize_activations(typeId, input, encoded, Int64(cols))
            let output = UnsafeMutablePointer<Float>.allocate(capacity: rows)
            defer { output.deallocate() }
            let tile = 16, chunks = rows / tile
            let data = weights.matrix.data, p = UnsafeRawPointer(packed), x = UnsafeRawPointer(encoded)
            for pool in pools {
                var best = (original: Double.infinity, packed: Double.infinity)
                for _ in 0..<5 {
                    best.original = min(best.original, bestTime(repeats: 4) {
                        pool.parallelFor(chunks) { c in
                            lk_matmul(typeId, data, rowBytes, Int64(cols), x, actRow, 1, output, Int64(rows),
                                      Int64(c * tile), Int64((c + 1) * tile))
                        }
                    })
                    best.packed = min(best.packed, bestTime(repeats: 4) {
                        pool.parallelFor(chunks) { c in
                            lk_matmul_x8(Int32(GGMLType.q4_0.rawValue), p, Int64(cols), x, actRow, 1, output, Int64(rows), Int64(c * tile), Int64((c + 1) * tile))
                        }
                    })
                }
                let bytes = Double(weights.matrix.byteCount)
                print("matvec Q4_0 \(rows)x\(cols), \(pool.threadCount) threads: original rows \(fixed(bytes / best.original / 1e9, 1)) GB/s, "
                      + "repacked in eights \(fixed(bytes / best.packed / 1e9, 1)) GB/s")
            }
        }

        // Prefill: 512 activation rows.
        let batch = 512, rows = 4096, cols = 4096
        let scratch = MatmulScratch(maxCols: cols, maxBatch: batch)
        var rng = TestRandom(seed: 2)
        let input = rng.floats(batch * cols)
        var output = [Float](repeating: 0, count: batch * rows)
        for type in [GGMLType.q4_0, .q8_0, .q4_K, .q6_K, .f16] {
            let weights = RandomWeights(type: type, rows: rows, cols: cols)
            for pool in pools {
                let time = bestTime(repeats: 2) {
                    matmul(weights.matrix, input: input, batch: batch, output: &output, pool: pool, scratch: scratch)
                }
                let gflops = 2.0 * Double(rows * cols * batch) / time / 1e9
                print("matmul \(type) \(rows)x\(cols) batch \(batch), \(pool.threadCount) threads: \(fixed(time * 1e3, 1)) ms, \(fixed(gflops, 1)) GFLOP/s")
            }
        }
    }
}
