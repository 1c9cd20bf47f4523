import CLlamaKernels
import GGUF
import LlamaKernels
import Testing

/// Weights, activations and double-precision references for one product.
private struct ProductCase {
    let type: GGMLType
    let rows: Int
    let cols: Int
    let batch: Int
    let weights: [UInt8]
    let weightValues: [Float]  // rows x cols, decoded by the reference decoder
    let input: [Float]  // batch x cols
    let encoded: [UInt8]  // batch rows of actRowSize bytes
    let actRowSize: Int
    let inputDecoded: [Float]  // batch x cols, the encoded activations decoded

    init(type: GGMLType, rows: Int, cols: Int, batch: Int, seed: UInt64) {
        self.type = type
        self.rows = rows
        self.cols = cols
        self.batch = batch
        var rng = TestRandom(seed: seed)
        let rowBytes = type.byteCount(elements: cols)
        var weights = [UInt8]()
        for _ in 0..<rows { weights += randomEncodedRow(type, count: cols, rng: &rng) }
        self.weights = weights
        var weightValues = [Float]()
        for r in 0..<rows { weightValues += referenceDequantize(type, weights, offset: r * rowBytes, count: cols) }
        self.weightValues = weightValues
        let input = rng.floats(batch * cols)
        self.input = input
        let typeId = Int32(type.rawValue)
        let actRowSize = Int(lk_act_row_size(typeId, Int64(cols)))
        self.actRowSize = actRowSize
        var encoded = [UInt8](repeating: 0, count: batch * actRowSize)
        encoded.withUnsafeMutableBytes { raw in
            for b in 0..<batch {
                lk_quantize_activations(typeId, Array(input[(b * cols)..<((b + 1) * cols)]),
                                        raw.baseAddress! + b * actRowSize, Int64(cols))
            }
        }
        self.encoded = encoded
        let dotType = GGMLType(rawValue: UInt32(lk_vec_dot_type(typeId)))!
        var decoded = [Float]()
        for b in 0..<batch { decoded += referenceDequantize(dotType, encoded, offset: b * actRowSize, count: cols) }
        inputDecoded = decoded
    }

    /// Runs the C kernel on rows [rowBegin, rowEnd) into a batch x rows output.
    func kernelOutput(rowBegin: Int = 0, rowEnd: Int? = nil) -> [Float] {
        var out = [Float](repeating: .nan, count: batch * rows)
        weights.withUnsafeBytes { w in
            encoded.withUnsafeBytes { x in
                lk_matmul(Int32(type.rawValue), w.baseAddress!, type.byteCount(elements: cols), Int64(cols),
                          x.baseAddress!, actRowSize, Int64(batch), &out, Int64(rows),
                          Int64(rowBegin), Int64(rowEnd ?? rows))
            }
        }
        return out
    }

    /// sum_c w[r][c] * x[b][c] and sum_c |w[r][c] * x[b][c]| in double precision.
    func reference(_ x: [Float], b: Int, r: Int) -> (value: Double, magnitude: Double) {
        var value = 0.0, magnitude = 0.0
        for c in 0..<cols {
            let p = Double(weightValues[r * cols + c]) * Double(x[b * cols + c])
            value += p
            magnitude += abs(p)
        }
        return (value, magnitude)
    }

    /// Bound on |sum_c w[r][c] * (x - decoded x)[b][c]| from the activation
    /// encoding: each element moves by at most half a step (Q8_0: amax/254 plus
    /// the half rounding of the scale; Q8_K: amax/254), zero for F32.
    func encodingErrorBound(b: Int, r: Int) -> Double {
        let dotType = lk_vec_dot_type(Int32(type.rawValue))
        if dotType == Int32(GGMLType.f32.rawValue) { return 0 }
        let group = dotType == Int32(GGMLType.q8_0.rawValue) ? 32 : 256
        let perAmax = dotType == Int32(GGMLType.q8_0.rawValue) ? (1.0 / 254 + 0x1p-11) : (1.0 / 254 + 1e-6)
        var bound = 0.0
        for start in stride(from: 0, to: cols, by: group) {
            var amax = 0.0, weightSum = 0.0
            for c in start..<(start + group) {
                amax = max(amax, Double(abs(input[b * cols + c])))
                weightSum += Double(abs(weightValues[r * cols + c]))
            }
            bound += weightSum * amax * perAmax
        }
        return bound * 1.001
    }
}

extension KernelTests {
@Suite("Matrix products")
struct MatmulTests {
    static let shapes: [(rows: Int, cols256: Int, cols32: Int)] = [(1, 256, 32), (7, 512, 96), (37, 256, 320), (70, 768, 4160)]

    /// For every instruction-set level, the kernel agrees with a double-precision
    /// product of the reference-decoded weights and the decoded encoded
    /// activations, so only float rounding separates them: the tolerance is
    /// 3e-6 times the sum of the magnitudes of the products (plus a tiny absolute
    /// term). Against the unencoded float activations the tolerance adds the
    /// bound on the activation encoding error (see `encodingErrorBound`).
    @Test("products match the double-precision reference", arguments: weightTypes)
    func matchesReference(type: GGMLType) {
        var seed: UInt64 = 1000 + UInt64(type.rawValue)
        for shape in Self.shapes {
            let cols = type.blockSize == 256 ? shape.cols256 : shape.cols32
            for batch in [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 16, 17] where shape.rows * batch <= 70 * 6 || batch <= 2 {
                seed += 1
                let product = ProductCase(type: type, rows: shape.rows, cols: cols, batch: batch, seed: seed)
                for level in KernelISA.available {
                    KernelISA.force(level)
                    let out = product.kernelOutput()
                    var tightFailures = 0, looseFailures = 0
                    for b in 0..<batch {
                        for r in 0..<shape.rows {
                            let got = Double(out[b * shape.rows + r])
                            let tight = product.reference(product.inputDecoded, b: b, r: r)
                            if !(abs(got - tight.value) <= 3e-6 * tight.magnitude + 1e-7) { tightFailures += 1 }
                            let loose = product.reference(product.input, b: b, r: r)
                            let bound = product.encodingErrorBound(b: b, r: r) + 3e-6 * loose.magnitude + 1e-7
                            if !(abs(got - loose.value) <= bound) { looseFailures += 1 }
                        }
                    }
                    #expect(tightFailures == 0, "\(type) \(level) \(shape.rows)x\(cols) batch \(batch): \(tightFailures) outputs off")
                    #expect(looseFailures == 0, "\(type) \(level) \(shape.rows)x\(cols) batch \(batch): \(looseFailures) outputs beyond the encoding bound")
                }
            }
        }
        KernelISA.force(KernelISA.best)
    }

    @Test("a row range writes exactly those rows", arguments: [GGMLType.q4_0, .q8_0, .q4_K, .q6_K, .f16])
    func rowRange(type: GGMLType) {
        let cols = type.blockSize == 256 ? 512 : 128
        let product = ProductCase(type: type, rows: 45, cols: cols, batch: 5, seed: 9)
        for level in KernelISA.available {
            KernelISA.force(level)
            let full = product.kernelOutput()
            let part = product.kernelOutput(rowBegin: 3, rowEnd: 30)
            for b in 0..<5 {
                for r in 0..<45 {
                    let value = part[b * 45 + r]
                    if r >= 3 && r < 30 {
                        #expect(abs(value - full[b * 45 + r]) <= 1e-5 * max(1, abs(value)))
                    } else {
                        #expect(value.isNaN, "\(type) \(level): row \(r) outside the range was written")
                    }
                }
            }
        }
        KernelISA.force(KernelISA.best)
    }

    @Test("threaded Swift driver agrees with the kernel", arguments: [GGMLType.q4_0, .q8_0, .q4_K, .q6_K, .f32])
    func driver(type: GGMLType) {
        let cols = type.blockSize == 256 ? 512 : 192
        let pool = ThreadPool(threadCount: 3)
        let scratch = MatmulScratch(maxCols: 1024, maxBatch: 16)
        for (rows, batch) in [(5, 1), (133, 1), (70, 7), (257, 16)] {
            let product = ProductCase(type: type, rows: rows, cols: cols, batch: batch, seed: UInt64(rows * 31 + batch))
            let expected = product.kernelOutput()
            var out = [Float](repeating: .nan, count: batch * rows)
            product.weights.withUnsafeBytes { w in
                let matrix = WeightMatrix(type: type, rows: rows, cols: cols, data: w.baseAddress!)
                matmul(matrix, input: product.input, batch: batch, output: &out, pool: pool, scratch: scratch)
            }
            for i in out.indices {
                #expect(abs(out[i] - expected[i]) <= 1e-5 * max(1, abs(expected[i])), "\(type) \(rows)x\(cols) batch \(batch) at \(i)")
            }
        }
    }

    @Test("paired products equal two single products")
    func pair() {
        let pool = ThreadPool(threadCount: 2)
        let scratch = MatmulScratch(maxCols: 512, maxBatch: 4)
        for (type1, type2) in [(GGMLType.q4_0, GGMLType.q4_0), (.q4_K, .q6_K), (.q4_0, .q8_0), (.f16, .f32)] {
            let cols = 512
            var rng = TestRandom(seed: 5)
            let rows1 = 96, rows2 = 40, batch = 3
            var w1 = [UInt8](), w2 = [UInt8]()
            for _ in 0..<rows1 { w1 += randomEncodedRow(type1, count: cols, rng: &rng) }
            for _ in 0..<rows2 { w2 += randomEncodedRow(type2, count: cols, rng: &rng) }
            let input = rng.floats(batch * cols)
            var single1 = [Float](repeating: 0, count: batch * rows1), single2 = [Float](repeating: 0, count: batch * rows2)
            var paired1 = single1, paired2 = single2
            w1.withUnsafeBytes { p1 in
                w2.withUnsafeBytes { p2 in
                    let m1 = WeightMatrix(type: type1, rows: rows1, cols: cols, data: p1.baseAddress!)
                    let m2 = WeightMatrix(type: type2, rows: rows2, cols: cols, data: p2.baseAddress!)
                    matmul(m1, input: input, batch: batch, output: &single1, pool: pool, scratch: scratch)
                    matmul(m2, input: input, batch: batch, output: &single2, pool: pool, scratch: scratch)
                    matmulPair(m1, m2, input: input, batch: batch, output1: &paired1, output2: &paired2, pool: pool, scratch: scratch)
                }
            }
            #expect(single1 == paired1, "\(type1)/\(type2) first output")
            #expect(single2 == paired2, "\(type1)/\(type2) second output")
        }
    }
}
}
