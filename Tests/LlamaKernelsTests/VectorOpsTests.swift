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
