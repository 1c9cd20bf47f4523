import TestSupport
import Foundation
import GGUF
import LlamaKernels
import Testing

extension KernelTests {
@Suite("Vector helpers")
struct VectorOpsTests {
    static let lengths = [0, 1, 3, 8, 15, 16, 17, 31, 64, 100, 128, 1000]

    @Test("dot and axpy, float and half storage, every level")
    func dotAndAxpy() {
        var rng = TestRandom(seed: 11)
        for level in KernelISA.available {
            KernelISA.force(level)
            for n in Self.lengths {
                let a = rng.floats(n), b = rng.floats(n)
                let halves = a.map { floatToHalf($0) }
                let aRounded = halves.map { halfToFloat($0) }
                var expected = 0.0, magnitude = 0.0, expectedHalf = 0.0, magnitudeHalf = 0.0
                for i in 0..<n {
                    expected += Double(a[i]) * Double(b[i])
                    magnitude += abs(Double(a[i]) * Double(b[i]))
                    expectedHalf += Double(aRounded[i]) * Double(b[i])
                    magnitudeHalf += abs(Double(aRounded[i]) * Double(b[i]))
                }
                let dot = Double(dotF32(a, b, count: n))
                #expect(abs(dot - expected) <= 1e-6 * magnitude + 1e-7, "\(level) dot n=\(n)")
                let dotHalf = Double(dotF16F32(halves, b, count: n))
                #expect(abs(dotHalf - expectedHalf) <= 1e-6 * magnitudeHalf + 1e-7, "\(level) half dot n=\(n)")

                let alpha = rng.gaussian()
                var y = b
                axpyF32(count: n, alpha: alpha, a, &y)
                for i in 0..<n {
                    let want = Double(b[i]) + Double(alpha) * Double(a[i])
                    #expect(abs(Double(y[i]) - want) <= 1e-6 * (abs(Double(b[i])) + abs(Double(alpha * a[i]))) + 1e-7)
                }
                var yHalf = b
                axpyF16(count: n, alpha: alpha, halves, &yHalf)
                for i in 0..<n {
                    let want = Double(b[i]) + Double(alpha) * Double(aRounded[i])
                    #expect(abs(Double(yHalf[i]) - want) <= 1e-6 * (abs(Double(b[i])) + abs(Double(alpha * aRounded[i]))) + 1e-7)
                }
            }
        }
        KernelISA.force(KernelISA.best)
    }

    /// Grouped attention against a double-precision softmax-weighted sum, and bitwise
    /// against the same computation spelled out with the level's dot and axpy (which a
    /// level's dedicated attention routine must reproduce exactly), for keys and values
    /// stored as floats and as halves (an f16 KV cache), head sizes with and without a
    /// dedicated routine, strided rows, several key/value heads side by side in a row, each
    /// shared by 1 to 3 query heads, and 1 to 37 cached positions (the AVX-512 routine takes
    /// positions in blocks of 8).
    @Test("attention matches dot-and-axpy bitwise and a double reference, float and half cache, every level")
    func attention() {
        var rng = TestRandom(seed: 23)
        for level in KernelISA.available {
            KernelISA.force(level)
            for headDim in [32, 48, 64, 128, 256] {
                for (kvHeads, group, positions) in [(1, 1, 1), (1, 2, 5), (1, 3, 37), (2, 2, 17), (3, 1, 20), (4, 1, 8)] {
                    for half in [false, true] {
                        checkAttention(level: level, half: half, headDim: headDim, kvHeads: kvHeads, group: group,
                                       positions: positions, rng: &rng)
                    }
                }
            }
        }
        KernelISA.force(KernelISA.best)
    }

    private func checkAttention(level: KernelISA, half: Bool, headDim: Int, kvHeads: Int, group: Int, positions: Int,
                                rng: inout TestRandom) {
        let heads = kvHeads * group
        let qStride = headDim + 3, rowStride = kvHeads * headDim + 5, outStride = headDim + 7
        let q = rng.floats(heads * qStride)
        var k = rng.floats(positions * rowStride), v = rng.floats(positions * rowStride)
        let kHalf = k.map { floatToHalf($0) }, vHalf = v.map { floatToHalf($0) }
        if half {
            // What the cache holds: the reference sees the rounded values.
            k = kHalf.map { halfToFloat($0) }
            v = vHalf.map { halfToFloat($0) }
        }
        let scale = 1 / Float(headDim).squareRoot()
        var scores = [Float](repeating: 0, count: heads * positions)
        var out = [Float](repeating: .nan, count: heads * outStride)
        if half {
            groupedAttention(queries: q, queryStride: qStride, keyValueHeads: kvHeads, group: group, keys: kHalf, values: vHalf,
                             rowStride: rowStride, headDim: headDim, positions: positions, scale: scale,
                             scores: &scores, output: &out, outputStride: outStride)
        } else {
            groupedAttention(queries: q, queryStride: qStride, keyValueHeads: kvHeads, group: group, keys: k, values: v,
                             rowStride: rowStride, headDim: headDim, positions: positions, scale: scale,
                             scores: &scores, output: &out, outputStride: outStride)
        }
        let label = "\(level) \(half ? "f16" : "f32") head \(headDim) kv heads \(kvHeads) x \(group) positions \(positions)"
        for h in 0..<heads {
            let row = h / group * headDim  // this head's key/value slice within a cached row
            // The generic computation with this level's dot and axpy.
            var s = (0..<positions).map { p -> Float in
                q.withUnsafeBufferPointer { qp in
                    let query = qp.baseAddress! + h * qStride
                    if half {
                        return kHalf.withUnsafeBufferPointer { dotF16F32($0.baseAddress! + p * rowStride + row, query, count: headDim) } * scale
                    }
                    return k.withUnsafeBufferPointer { dotF32(query, $0.baseAddress! + p * rowStride + row, count: headDim) } * scale
                }
            }
            let top = s.max()!
            var sum: Float = 0
            for p in 0..<positions { s[p] = expf(s[p] - top); sum += s[p] }
            let inv = 1 / sum
            for p in 0..<positions { s[p] *= inv }
            var generic = [Float](repeating: 0, count: headDim)
            for p in 0..<positions {
                if half {
                    vHalf.withUnsafeBufferPointer { axpyF16(count: headDim, alpha: s[p], $0.baseAddress! + p * rowStride + row, &generic) }
                } else {
                    v.withUnsafeBufferPointer { axpyF32(count: headDim, alpha: s[p], $0.baseAddress! + p * rowStride + row, &generic) }
                }
            }
            // Double precision.
            let logits = (0..<positions).map { p in
                (0..<headDim).reduce(0.0) { $0 + Double(q[h * qStride + $1]) * Double(k[p * rowStride + row + $1]) } * Double(scale)
            }
            let m = logits.max()!
            let weights = logits.map { Foundation.exp($0 - m) }
            let total = weights.reduce(0, +)
            var bitwise = 0, off = 0
            for d in 0..<headDim {
                let got = out[h * outStride + d]
                if got.bitPattern != generic[d].bitPattern { bitwise += 1 }
                var want = 0.0, magnitude = 0.0
                for p in 0..<positions {
                    want += weights[p] / total * Double(v[p * rowStride + row + d])
                    magnitude += weights[p] / total * abs(Double(v[p * rowStride + row + d]))
                }
                if !(abs(Double(got) - want) <= 1e-5 * magnitude + 1e-6) { off += 1 }
            }
            #expect(bitwise == 0, "\(label) head \(h): \(bitwise) outputs differ from dot and axpy")
            #expect(off == 0, "\(label) head \(h): \(off) outputs off")
        }
    }

    /// SwiGLU against silu(g) * u in double precision, at every level: gates from a wide normal
    /// spread plus the ends where e^-g overflows or vanishes, every length from 1 to 40 (the
    /// vector routine's masked tail) and a long row.
    @Test("swiglu is within a few units in the last place of a double reference, every level")
    func swigluAccuracy() {
        var rng = TestRandom(seed: 31)
        let edges: [Float] = [0, -0.0, 1e-20, -1e-20, 0.5, -0.5, 10, -10, 30, -30, 87, -87, 88.5, -88.5, 89, -89,
                              95, -95, 103, -103, 110, -110, 1e30, -1e30]
        var gates = edges + (0..<4000).map { _ in rng.gaussian() * 6 }
        var ups = gates.map { _ in rng.uniform(-2, 2) }
        gates += (0..<40).map { _ in rng.gaussian() * 4 }
        ups += (0..<40).map { _ in rng.uniform(-2, 2) }
        for level in KernelISA.available {
            KernelISA.force(level)
            var lengths = Array(1...40).map { (gates.count - 40, $0) }
            lengths.append((0, gates.count))
            var off = 0
            var worst = ""
            for (start, count) in lengths {
                var got = Array(gates[start..<start + count])
                let up = Array(ups[start..<start + count])
                swiglu(gate: &got, up: up, count: count)
                for i in 0..<count {
                    let g = Double(gates[start + i]), u = Double(up[i])
                    let want = g / (1 + Foundation.exp(-g)) * u
                    let tolerance = 6e-7 * abs(want) + 1e-35  // below, e^-g overflows: 0
                    if !(abs(Double(got[i]) - want) <= tolerance) {
                        off += 1
                        worst = "g \(g) u \(u): \(got[i]) vs \(want)"
                    }
                }
            }
            #expect(off == 0, "\(level): \(off) values off, e.g. \(worst)")
        }
        KernelISA.force(KernelISA.best)
    }

    @Test("levels are reported and clamped")
    func levels() {
        #expect(KernelISA.available.first == .scalar)
        KernelISA.force(.scalar)
        #expect(KernelISA.current == .scalar)
        #expect(KernelISA.current.description == "scalar")
        KernelISA.force(.avx512)
        #expect(KernelISA.current == KernelISA.best)
        #expect(KernelISA.available.contains(KernelISA.current))
    }
}
}
