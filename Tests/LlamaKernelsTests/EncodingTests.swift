import TestSupport
import CLlamaKernels
import GGUF
import LlamaKernels
import Testing

/// Every test that selects an instruction-set level lives under this suite, which
/// runs its tests one at a time so that a forced level is not changed midway.
@Suite("Kernels", .serialized)
struct KernelTests {}

extension KernelTests {
@Suite("Encoding")
struct EncodingTests {
    @Test("row sizes follow the GGML block sizes", arguments: weightTypes + [.q8_K])
    func rowSizes(type: GGMLType) {
        let count = 1024
        #expect(Int(lk_row_size(Int32(type.rawValue), Int64(count))) == type.byteCount(elements: count))
        #expect(Int(lk_block_elements(Int32(type.rawValue))) == type.blockSize)
    }

    @Test("vec-dot types")
    func vecDotTypes() {
        func dotType(_ t: GGMLType) -> Int32 { lk_vec_dot_type(Int32(t.rawValue)) }
        #expect(dotType(.q4_0) == Int32(GGMLType.q8_0.rawValue))
        #expect(dotType(.q8_0) == Int32(GGMLType.q8_0.rawValue))
        #expect(dotType(.q4_K) == Int32(GGMLType.q8_K.rawValue))
        #expect(dotType(.q6_K) == Int32(GGMLType.q8_K.rawValue))
        #expect(dotType(.f32) == Int32(GGMLType.f32.rawValue))
        #expect(dotType(.f16) == Int32(GGMLType.f32.rawValue))
        #expect(dotType(.bf16) == Int32(GGMLType.f32.rawValue))
        #expect(dotType(.q5_K) == -1)
    }

    @Test("decoding random blocks matches the reference decoder", arguments: weightTypes + [.q8_K])
    func dequantizeMatchesReference(type: GGMLType) {
        var rng = TestRandom(seed: 0x5eed + UInt64(type.rawValue))
        let count = 4 * 256
        let bytes = randomEncodedRow(type, count: count, rng: &rng)
        let expected = referenceDequantize(type, bytes, count: count)
        var actual = [Float](repeating: .nan, count: count)
        for level in KernelISA.available {
            KernelISA.force(level)
            bytes.withUnsafeBytes { raw in
                dequantizeRow(type, raw.baseAddress!, &actual, count: count)
            }
            var worst: Float = 0
            for i in 0..<count {
                worst = max(worst, abs(actual[i] - expected[i]) / max(abs(expected[i]), 1e-30))
            }
            // Both sides evaluate the same float expressions; allow only last-bit differences
            // from fused multiply-add contraction.
            #expect(worst <= 1e-6, "\(type) on \(level): worst relative difference \(worst)")
        }
        KernelISA.force(KernelISA.best)
    }

    /// Encode random Gaussian rows and decode them again. Bounds, relative to the
    /// largest magnitude in the block (or super-block) of each element:
    /// F32 exact; F16 relative 2^-11; BF16 relative 2^-8; Q8_0 amax/254 plus the
    /// half rounding of the scale; Q4_0 one step (amax/8, the top value clamps);
    /// Q4_K 0.11 amax; Q6_K 0.036 amax (one step of amax/32 where the top value
    /// clamps, plus the rounding of the 8-bit sub-block scale). Root-mean-square errors are also bounded.
    @Test("encode then decode stays within the format's error bound", arguments: weightTypes)
    func roundTrip(type: GGMLType) {
        var rng = TestRandom(seed: 77 + UInt64(type.rawValue))
        let count = 64 * 256
        let values = rng.floats(count)
        var encoded = [UInt8](repeating: 0, count: type.byteCount(elements: count))
        encoded.withUnsafeMutableBytes { raw in
            quantizeRow(type, values, raw.baseAddress!, count: count)
        }
        let decoded = referenceDequantize(type, encoded, count: count)
        let group = type.blockSize == 1 ? 32 : type.blockSize
        var sumSquaredError: Double = 0
        var sumSquared: Double = 0
        var violations = 0
        for start in stride(from: 0, to: count, by: group) {
            let amax = values[start..<(start + group)].map { abs($0) }.max()!
            for i in start..<(start + group) {
                let error = abs(decoded[i] - values[i])
                sumSquaredError += Double(error * error)
                sumSquared += Double(values[i] * values[i])
                let bound: Float
                switch type {
                case .f32: bound = 0
                case .f16: bound = abs(values[i]) * 0x1p-11 + 0x1p-24
                case .bf16: bound = abs(values[i]) * 0x1p-8
                case .q8_0: bound = amax * (1.0 / 254 + 0x1p-11) * 1.001
                case .q4_0: bound = amax / 8 * (1 + 0x1p-10)
                case .q4_K: bound = amax * 0.11
                case .q6_K: bound = amax * 0.036
                default: bound = 0
                }
                if error > bound { violations += 1 }
            }
        }
        #expect(violations == 0, "\(type): \(violations) elements beyond the bound")
        let relativeRMS = (sumSquaredError / sumSquared).squareRoot()
        let rmsBound: Double
        switch type {
        case .f32: rmsBound = 0
        case .f16: rmsBound = 3e-4
        case .bf16: rmsBound = 3e-3
        case .q8_0: rmsBound = 0.006
        case .q4_0: rmsBound = 0.12
        case .q4_K: rmsBound = 0.1
        case .q6_K: rmsBound = 0.03
        default: rmsBound = 0
        }
        #expect(relativeRMS <= rmsBound, "\(type): relative RMS error \(relativeRMS)")
    }

    /// Activation encodings are the same bytes at every level (a level may encode with its own
    /// routine), including blocks of zeros, ties between two quants, tiny and large magnitudes,
    /// and widths that leave a partial group and superblock.
    @Test("activation encodings are bitwise the same at every level", arguments: [GGMLType.q4_0, .q8_0, .q4_K])
    func activationEncodingAcrossLevels(type: GGMLType) {
        var rng = TestRandom(seed: 31 + UInt64(type.rawValue))
        let typeId = Int32(type.rawValue)
        for cols in type.blockSize == 256 ? [256, 768, 4096] : [32, 96, 480, 544, 4096, 11008] {
            var x = rng.floats(cols)
            for i in 0..<min(32, cols) { x[i] = 0 }  // a block of zeros
            if cols >= 96 {
                // A block whose scale makes x * (1 / d) land on halves: 127 and 63.5 * d.
                x[64] = 127
                for i in 65..<96 { x[i] = Float(i - 65) + 0.5 }
            }
            if cols >= 480 { for i in 96..<128 { x[i] *= 1e-30 } }
            if cols >= 544 { for i in 128..<160 { x[i] *= 1e20 } }
            let size = Int(lk_act_row_size(typeId, Int64(cols)))
            func encode() -> [UInt8] {
                var bytes = [UInt8](repeating: 0xAB, count: size)
                bytes.withUnsafeMutableBytes { lk_quantize_activations(typeId, x, $0.baseAddress!, Int64(cols)) }
                return bytes
            }
            KernelISA.force(.scalar)
            let reference = encode()
            for level in KernelISA.available {
                KernelISA.force(level)
                let bytes = encode()
                let differing = zip(bytes, reference).filter { $0 != $1 }.count
                #expect(differing == 0, "\(type) \(level) width \(cols): \(differing) bytes differ from the portable encoding")
            }
        }
        KernelISA.force(KernelISA.best)
    }

    @Test("half conversion matches the reference in both directions")
    func halfConversion() {
        var rng = TestRandom(seed: 3)
        var halves: [UInt16] = (0..<4096).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
        halves = halves.filter { ($0 >> 10) & 0x1f != 31 }  // finite values
        halves += [0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x3c00]
        var floats = [Float](repeating: 0, count: halves.count)
        var back = [UInt16](repeating: 0, count: halves.count)
        for level in KernelISA.available {
            KernelISA.force(level)
            convertF16ToF32(halves, &floats, count: halves.count)
            for i in halves.indices { #expect(floats[i] == halfToFloat(halves[i])) }
            convertF32ToF16(floats, &back, count: floats.count)
            #expect(back == halves, "\(level): half -> float -> half is not the identity")
            // Rounding of values between halves, including subnormals and overflow.
            let probes: [Float] = (0..<2000).map { _ in
                rng.gaussian() * Float(sign: .plus, exponent: Int(rng.next() % 40) - 26, significand: 1)
            }
            var encoded = [UInt16](repeating: 0, count: probes.count)
            convertF32ToF16(probes, &encoded, count: probes.count)
            for i in probes.indices { #expect(encoded[i] == floatToHalf(probes[i]), "\(level): \(probes[i])") }
        }
        KernelISA.force(KernelISA.best)
    }
}
}
