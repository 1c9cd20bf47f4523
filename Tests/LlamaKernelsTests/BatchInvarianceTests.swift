import TestSupport
import CLlamaKernels
import GGUF
import LlamaKernels
import Testing

// MARK: - Batch invariance

/// Random weights and a batch of encoded activation rows for exactness checks.
private struct InvarianceCase {
    let type: GGMLType
    let rows: Int
    let cols: Int
    let batch: Int
    let weights: [UInt8]
    let encoded: [UInt8]
    let actRowSize: Int

    init(type: GGMLType, rows: Int, cols: Int, batch: Int, seed: UInt64) {
        self.type = type
        self.rows = rows
        self.cols = cols
        self.batch = batch
        var rng = TestRandom(seed: seed)
        var weights = [UInt8]()
        for _ in 0..<rows { weights += randomEncodedRow(type, count: cols, rng: &rng) }
        self.weights = weights
        (encoded, actRowSize) = encodeActivationRows(type, rng.floats(batch * cols), batch: batch, cols: cols)
    }

    /// Runs lk_matmul on activation rows [first, first + count) and weight rows
    /// [rowBegin, rowEnd), writing into `out` (a batch x rows matrix) at the
    /// activation rows' own positions.
    func run(first: Int, count: Int, rowBegin: Int, rowEnd: Int, into out: inout [Float]) {
        weights.withUnsafeBytes { w in
            encoded.withUnsafeBytes { x in
                out.withUnsafeMutableBufferPointer { o in
                    lk_matmul(Int32(type.rawValue), w.baseAddress!, type.byteCount(elements: cols), Int64(cols),
                              x.baseAddress! + first * actRowSize, actRowSize, Int64(count),
                              o.baseAddress! + first * rows, Int64(rows), Int64(rowBegin), Int64(rowEnd))
                }
            }
        }
    }
}

/// Number of positions whose float bit patterns differ, and the largest difference.
func bitwiseDifferences(_ a: [Float], _ b: [Float]) -> (count: Int, largest: Float) {
    var count = 0
    var largest: Float = 0
    for i in a.indices where a[i].bitPattern != b[i].bitPattern {
        count += 1
        largest = max(largest, abs(a[i] - b[i]))
    }
    return (count, largest)
}

extension KernelTests {
@Suite("Batch invariance")
struct BatchInvarianceTests {
    /// Widths that cross every blocking boundary of the kernels: several weight
    /// panels along a row plus a partial one, and (for 32-element blocks) a
    /// partial group of four blocks; float widths are not multiples of the
    /// vector size.
    static func width(_ type: GGMLType) -> Int {
        switch type.blockSize {
        case 256: return 35 * 256
        case 32: return 259 * 32
        default: return 2 * 1024 + 557
        }
    }

    /// For every instruction-set level, each output element is bitwise the same
    /// whether its activation row is multiplied as part of a batch (of any size),
    /// alone, or with the weight rows split into ranges at arbitrary boundaries.
    @Test("a batched product equals row-by-row and split products bitwise", arguments: weightTypes)
    func batchInvariance(type: GGMLType) {
        let rows = 37  // not a multiple of any row tile
        let cols = Self.width(type)
        var seed: UInt64 = 7000 + UInt64(type.rawValue) * 100
        for batch in Array(1...17) + [40] {
            seed += 1
            let product = InvarianceCase(type: type, rows: rows, cols: cols, batch: batch, seed: seed)
            var cutRng = TestRandom(seed: seed)
            for level in KernelISA.available {
                KernelISA.force(level)
                var whole = [Float](repeating: .nan, count: batch * rows)
                product.run(first: 0, count: batch, rowBegin: 0, rowEnd: rows, into: &whole)
                #expect(!whole.contains { $0.isNaN }, "\(type) \(level) batch \(batch): output not written")

                var single = [Float](repeating: .nan, count: batch * rows)
                for b in 0..<batch { product.run(first: b, count: 1, rowBegin: 0, rowEnd: rows, into: &single) }
                let singleDiff = bitwiseDifferences(whole, single)
                #expect(singleDiff.count == 0,
                        "\(type) \(level) batch \(batch): \(singleDiff.count) outputs differ from row-by-row products (largest \(singleDiff.largest))")

                // Three ranges with random boundaries, and one range per weight row.
                let cut1 = 1 + Int(cutRng.next() % UInt64(rows - 2))
                let cut2 = cut1 + 1 + Int(cutRng.next() % UInt64(rows - cut1 - 1))
                var split = [Float](repeating: .nan, count: batch * rows)
                for (begin, end) in [(0, cut1), (cut1, cut2), (cut2, rows)] {
                    product.run(first: 0, count: batch, rowBegin: begin, rowEnd: end, into: &split)
                }
                let splitDiff = bitwiseDifferences(whole, split)
                #expect(splitDiff.count == 0,
                        "\(type) \(level) batch \(batch): \(splitDiff.count) outputs differ with rows split at \(cut1), \(cut2) (largest \(splitDiff.largest))")

                var perRow = [Float](repeating: .nan, count: batch * rows)
                for r in 0..<rows { product.run(first: 0, count: batch, rowBegin: r, rowEnd: r + 1, into: &perRow) }
                let perRowDiff = bitwiseDifferences(whole, perRow)
                #expect(perRowDiff.count == 0,
                        "\(type) \(level) batch \(batch): \(perRowDiff.count) outputs differ with one weight row at a time (largest \(perRowDiff.largest))")
            }
        }
        KernelISA.force(KernelISA.best)
    }
}
}

/// `batch` rows of `cols` values encoded by `lk_quantize_activations` for `type` weights, and
/// the bytes of one encoded row.
func encodeActivationRows(_ type: GGMLType, _ input: [Float], batch: Int, cols: Int) -> (bytes: [UInt8], rowSize: Int) {
    let typeId = Int32(type.rawValue)
    let rowSize = Int(lk_act_row_size(typeId, Int64(cols)))
    var encoded = [UInt8](repeating: 0, count: batch * rowSize)
    encoded.withUnsafeMutableBytes { raw in
        input.withUnsafeBufferPointer { x in
            for b in 0..<batch {
                lk_quantize_activations(typeId, x.baseAddress! + b * cols, raw.baseAddress! + b * rowSize, Int64(cols))
            }
        }
    }
    return (encoded, rowSize)
}
