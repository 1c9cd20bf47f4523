import TestSupport
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
            // Float weights take any width: use widths that are not multiples of the vector size.
            let cols = type.blockSize == 256 ? shape.cols256 : type.blockSize == 32 ? shape.cols32 : shape.cols32 + 5
            for batch in 1...17 where shape.rows < 70 || batch <= 6 || batch == 17 {
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

    /// Batches larger than the kernels' activation blocks and rows longer than
    /// their weight panels, so every blocking boundary is crossed.
    @Test("large batches and long rows match the reference", arguments: weightTypes)
    func largeShapes(type: GGMLType) {
        let rows = 9, cols = 4608, batch = 300
        let product = ProductCase(type: type, rows: rows, cols: cols, batch: batch, seed: 4242 + UInt64(type.rawValue))
        for level in KernelISA.available {
            KernelISA.force(level)
            let out = product.kernelOutput()
            var failures = 0
            for b in 0..<batch {
                for r in 0..<rows {
                    let tight = product.reference(product.inputDecoded, b: b, r: r)
                    if !(abs(Double(out[b * rows + r]) - tight.value) <= 3e-6 * tight.magnitude + 1e-7) { failures += 1 }
                }
            }
            #expect(failures == 0, "\(type) \(level): \(failures) outputs off")
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

    @Test("shared-input products equal single products, two or three, same or mixed encodings")
    func shared() {
        let pool = ThreadPool(threadCount: 2)
        let scratch = MatmulScratch(maxCols: 512, maxBatch: 8)
        let cases: [[GGMLType]] = [[.q4_0, .q4_0], [.q4_K, .q6_K], [.q4_0, .q8_0], [.f16, .f32],
                                   [.q4_0, .q4_0, .q4_0], [.q8_0, .q4_0, .q8_0], [.q4_0, .q4_0, .q6_K], [.f32, .f16, .bf16]]
        for types in cases {
            for batch in [1, 3, 8] {
                let cols = 512
                var rng = TestRandom(seed: 5)
                let rows = [96, 40, 72]
                var weights: [[UInt8]] = []
                for (i, type) in types.enumerated() {
                    var w = [UInt8]()
                    for _ in 0..<rows[i] { w += randomEncodedRow(type, count: cols, rng: &rng) }
                    weights.append(w)
                }
                let input = rng.floats(batch * cols)
                var single = types.indices.map { [Float](repeating: 0, count: batch * rows[$0]) }
                var shared1 = [Float](repeating: .nan, count: batch * rows[0])
                var shared2 = [Float](repeating: .nan, count: batch * rows[1])
                var shared3 = [Float](repeating: .nan, count: batch * rows[2])
                withMatrices(types, rows: rows, cols: cols, weights) { m in
                    for i in m.indices {
                        matmul(m[i], input: input, batch: batch, output: &single[i], pool: pool, scratch: scratch)
                    }
                    if m.count == 3 {
                        matmulShared(m[0], m[1], m[2], input: input, batch: batch, output1: &shared1, output2: &shared2,
                                     output3: &shared3, pool: pool, scratch: scratch)
                    } else {
                        matmulShared(m[0], m[1], input: input, batch: batch, output1: &shared1, output2: &shared2,
                                     pool: pool, scratch: scratch)
                    }
                }
                let shared = [shared1, shared2, shared3]
                for i in types.indices {
                    #expect(single[i] == shared[i], "\(types) batch \(batch): output \(i + 1)")
                }
            }
        }
    }

    /// Weight matrices over `weights` (one byte array each) for the duration of `body`.
    private func withMatrices(_ types: [GGMLType], rows: [Int], cols: Int, _ weights: [[UInt8]],
                              _ body: ([WeightMatrix]) -> Void) {
        func nest(_ i: Int, _ built: [WeightMatrix]) {
            if i == types.count { body(built); return }
            weights[i].withUnsafeBytes { p in
                nest(i + 1, built + [WeightMatrix(type: types[i], rows: rows[i], cols: cols, data: p.baseAddress!)])
            }
        }
        nest(0, [])
    }
}
}
