import CLlamaKernels
import GGUF

// MARK: - Weight matrix

/// A row-major weight matrix in a GGML encoding: `rows` output features of
/// `cols` inputs each (GGML ne0 = cols, ne1 = rows), rows stored back to back.
public struct WeightMatrix: @unchecked Sendable {
    public var type: GGMLType
    public var rows: Int
    public var cols: Int
    public var data: UnsafeRawPointer
    /// The same Q4_0 or Q8_0 rows repacked in groups of eight (`lk_x8_pack`), when a copy is
    /// mapped: the AVX2 level reads these instead, with bitwise the same results.
    public var packed: UnsafeRawPointer?

    public init(type: GGMLType, rows: Int, cols: Int, data: UnsafeRawPointer, packed: UnsafeRawPointer? = nil) {
        self.type = type
        self.rows = rows
        self.cols = cols
        self.data = data
        self.packed = packed
    }

    /// Bytes of one row.
    public var rowStride: Int { type.byteCount(elements: cols) }

    /// Bytes of the whole matrix.
    public var byteCount: Int { rowStride * rows }
}

// MARK: - Scratch

/// Preallocated space for the encoded activations of matrix products with up to
/// `maxCols` inputs and `maxBatch` activation rows.
public final class MatmulScratch: @unchecked Sendable {
    public let maxCols: Int
    public let maxBatch: Int
    let buffer: UnsafeMutableRawPointer
    let capacity: Int

    public init(maxCols: Int, maxBatch: Int) {
        precondition(maxCols > 0 && maxBatch > 0, "scratch dimensions must be positive")
        self.maxCols = maxCols
        self.maxBatch = maxBatch
        // Round the width up to a whole super-block so every type fits.
        let paddedCols = (maxCols + 255) / 256 * 256
        var rowBytes = 0
        for type in [GGMLType.f32, .q4_0, .q8_0, .q4_K, .q6_K] {
            rowBytes = max(rowBytes, Int(lk_act_row_size(Int32(type.rawValue), Int64(paddedCols))))
        }
        capacity = maxBatch * roundUp(rowBytes, 64)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    deinit { buffer.deallocate() }
}

@inline(__always)
private func roundUp(_ value: Int, _ multiple: Int) -> Int { (value + multiple - 1) / multiple * multiple }

// MARK: - Products

/// Activations ready for `lk_matmul`: base address and row stride in bytes.
private struct EncodedActivations {
    var base: UnsafeRawPointer
    var rowStride: Int
}

/// Encodes `batch` rows of `cols` floats for products with weights of `type`.
private func encodeActivations(
    type: GGMLType, cols: Int, input: UnsafePointer<Float>, batch: Int,
    pool: ThreadPool, scratch: MatmulScratch
) -> EncodedActivations {
    precondition(type.isSupported, "matmul: unsupported weight type \(type)")
    precondition(cols % type.blockSize == 0,
                 "matmul: \(cols) columns is not a multiple of the \(type) block size")
    precondition(cols <= scratch.maxCols && batch <= scratch.maxBatch,
                 "matmul: \(batch)x\(cols) exceeds the scratch size \(scratch.maxBatch)x\(scratch.maxCols)")
    let typeId = Int32(type.rawValue)
    if lk_vec_dot_type(typeId) == Int32(GGMLType.f32.rawValue) {
        return EncodedActivations(base: UnsafeRawPointer(input), rowStride: cols * MemoryLayout<Float>.stride)
    }
    let stride = roundUp(Int(lk_act_row_size(typeId, Int64(cols))), 64)
    let base = scratch.buffer
    if batch >= 4 && batch * cols >= 1 << 16 {
        pool.parallelFor(batch) { b in
            lk_quantize_activations(typeId, input + b * cols, base + b * stride, Int64(cols))
        }
    } else {
        for b in 0..<batch {
            lk_quantize_activations(typeId, input + b * cols, base + b * stride, Int64(cols))
        }
    }
    return EncodedActivations(base: UnsafeRawPointer(base), rowStride: stride)
}

/// Row ranges handed to threads: multiples of the kernel's row tile, sixteen per
/// thread, taken in turn, so that a thread slowed by other load does not hold up
/// the rest and the last range keeps the other threads waiting only briefly.
private struct RowPartition {
    var rows: Int
    var chunkRows: Int
    var count: Int

    /// `share` of the sixteen ranges per thread (products run in one dispatch split them by rows,
    /// so that the dispatch still hands out about sixteen per thread, one at a time).
    init(rows: Int, type: GGMLType, threads: Int, share: Double = 1) {
        let tile = Int(lk_matmul_row_tile(Int32(type.rawValue)))
        let wanted = threads == 1 ? 1 : max(1, Int(Double(threads * 16) * share))
        let chunk = roundUp(max(1, (rows + wanted - 1) / wanted), tile)
        self.rows = rows
        self.chunkRows = chunk
        self.count = (rows + chunk - 1) / chunk
    }

    func range(_ index: Int) -> (begin: Int, end: Int) {
        let begin = index * chunkRows
        return (begin, min(begin + chunkRows, rows))
    }
}

@inline(__always)
private func runKernel(
    _ w: WeightMatrix, _ x: EncodedActivations, batch: Int,
    output: UnsafeMutablePointer<Float>, rowBegin: Int, rowEnd: Int
) {
    if let packed = w.packed, lk_isa_level() == Int32(KernelISA.avx2.rawValue), rowBegin % 8 == 0, rowEnd % 8 == 0 {
        lk_matmul_x8(Int32(w.type.rawValue), packed, Int64(w.cols), x.base, x.rowStride, Int64(batch), output, Int64(w.rows),
                     Int64(rowBegin), Int64(rowEnd))
        return
    }
    lk_matmul(Int32(w.type.rawValue), w.data, w.rowStride, Int64(w.cols),
              x.base, x.rowStride, Int64(batch),
              output, Int64(w.rows), Int64(rowBegin), Int64(rowEnd))
}

/// Multiplies `batch` activation rows by the weight matrix:
/// `output[b * w.rows + r] = sum_c W[r][c] * input[b * w.cols + c]`.
///
/// The activations are encoded into the weight type's vec-dot encoding (in
/// parallel when the batch is large), then the output rows are split among the
/// pool's threads.
public func matmul(
    _ w: WeightMatrix, input: UnsafePointer<Float>, batch: Int,
    output: UnsafeMutablePointer<Float>, pool: ThreadPool, scratch: MatmulScratch
) {
    if batch <= 0 || w.rows <= 0 { return }
    let x = encodeActivations(type: w.type, cols: w.cols, input: input, batch: batch, pool: pool, scratch: scratch)
    let partition = RowPartition(rows: w.rows, type: w.type, threads: pool.threadCount)
    pool.parallelFor(partition.count) { index in
        let range = partition.range(index)
        runKernel(w, x, batch: batch, output: output, rowBegin: range.begin, rowEnd: range.end)
    }
}

/// Two or three products sharing one input, as the query, key and value projections or the
/// gate and up projections of a layer: `output_i = input x W_i^T` for each weight matrix.
///
/// When all weights use the same encoding the input is encoded once and every product's row
/// ranges run in a single parallel dispatch (one wait at the end instead of one per product);
/// otherwise the products run one after the other. Either way each output is bitwise what
/// `matmul` gives.
public func matmulShared(
    _ w1: WeightMatrix, _ w2: WeightMatrix, _ w3: WeightMatrix? = nil, input: UnsafePointer<Float>, batch: Int,
    output1: UnsafeMutablePointer<Float>, output2: UnsafeMutablePointer<Float>,
    output3: UnsafeMutablePointer<Float>? = nil, pool: ThreadPool, scratch: MatmulScratch
) {
    precondition(w1.cols == w2.cols && (w3 == nil || w3!.cols == w1.cols),
                 "matmulShared: the weights have different input widths")
    precondition((w3 == nil) == (output3 == nil), "matmulShared: a third weight matrix needs a third output")
    if batch <= 0 { return }
    let encoding = lk_vec_dot_type(Int32(w1.type.rawValue))
    let sameEncoding = lk_vec_dot_type(Int32(w2.type.rawValue)) == encoding
        && (w3 == nil || lk_vec_dot_type(Int32(w3!.type.rawValue)) == encoding)
    guard sameEncoding else {
        matmul(w1, input: input, batch: batch, output: output1, pool: pool, scratch: scratch)
        matmul(w2, input: input, batch: batch, output: output2, pool: pool, scratch: scratch)
        if let w3, let output3 { matmul(w3, input: input, batch: batch, output: output3, pool: pool, scratch: scratch) }
        return
    }
    let x = encodeActivations(type: w1.type, cols: w1.cols, input: input, batch: batch, pool: pool, scratch: scratch)
    let totalRows = Double(w1.rows + w2.rows + (w3?.rows ?? 0))
    func partition(_ w: WeightMatrix) -> RowPartition {
        RowPartition(rows: w.rows, type: w.type, threads: pool.threadCount, share: Double(w.rows) / totalRows)
    }
    let first = partition(w1), second = partition(w2), third = w3.map(partition)
    let n1 = first.count, n12 = first.count + second.count
    pool.parallelFor(n12 + (third?.count ?? 0)) { index in
        if index < n1 {
            let range = first.range(index)
            runKernel(w1, x, batch: batch, output: output1, rowBegin: range.begin, rowEnd: range.end)
        } else if index < n12 {
            let range = second.range(index - n1)
            runKernel(w2, x, batch: batch, output: output2, rowBegin: range.begin, rowEnd: range.end)
        } else {
            let range = third!.range(index - n12)
            runKernel(w3!, x, batch: batch, output: output3!, rowBegin: range.begin, rowEnd: range.end)
        }
    }
}
