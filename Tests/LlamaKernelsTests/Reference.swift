// Independent reference code for the kernel tests: a deterministic random
// generator, half/bfloat conversions and scalar decoders for every GGML block
// layout, written from the format descriptions without calling the C kernels.

import GGUF
import TestSupport

// MARK: - Random numbers

/// The shared seeded generator (SplitMix64) of the test support.
typealias TestRandom = SeededGenerator

// MARK: - Scalar conversions

func halfToFloat(_ h: UInt16) -> Float {
    let sign: Float = (h & 0x8000) != 0 ? -1 : 1
    let exponent = Int((h >> 10) & 0x1f)
    let mantissa = Float(h & 0x3ff)
    switch exponent {
    case 0: return sign * mantissa * Float(sign: .plus, exponent: -24, significand: 1)
    case 31: return mantissa == 0 ? sign * .infinity : .nan
    default: return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}

/// Nearest half (ties to even) of a finite float within the normal half range.
func floatToHalf(_ f: Float) -> UInt16 {
    let sign: UInt16 = f.sign == .minus ? 0x8000 : 0
    let a = abs(f)
    if a == 0 { return sign }
    if a < Float(sign: .plus, exponent: -14, significand: 1) {
        let units = (a * Float(sign: .plus, exponent: 24, significand: 1)).rounded(.toNearestOrEven)
        return sign | UInt16(units)
    }
    let exponent = Int(a.exponent)
    let significand = a.significand  // in [1, 2)
    var mantissa = ((significand - 1) * 1024).rounded(.toNearestOrEven)
    var e = exponent
    if mantissa == 1024 { mantissa = 0; e += 1 }
    if e > 15 { return sign | 0x7c00 }
    return sign | UInt16(e + 15) << 10 | UInt16(mantissa)
}

func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

// MARK: - Byte access

extension Array where Element == UInt8 {
    func u16(_ offset: Int) -> UInt16 { UInt16(self[offset]) | UInt16(self[offset + 1]) << 8 }
    func i8(_ offset: Int) -> Int { Int(Int8(bitPattern: self[offset])) }
    func i16(_ offset: Int) -> Int { Int(Int16(bitPattern: u16(offset))) }
    func f32(_ offset: Int) -> Float {
        Float(bitPattern: UInt32(self[offset]) | UInt32(self[offset + 1]) << 8
              | UInt32(self[offset + 2]) << 16 | UInt32(self[offset + 3]) << 24)
    }
    mutating func setU16(_ offset: Int, _ value: UInt16) {
        self[offset] = UInt8(value & 0xff)
        self[offset + 1] = UInt8(value >> 8)
    }
    mutating func setF32(_ offset: Int, _ value: Float) {
        let bits = value.bitPattern
        for k in 0..<4 { self[offset + k] = UInt8((bits >> (8 * UInt32(k))) & 0xff) }
    }
}

// MARK: - Reference decoders

/// Decodes `count` elements of `type` stored in `bytes` starting at `offset`.
func referenceDequantize(_ type: GGMLType, _ bytes: [UInt8], offset: Int = 0, count: Int) -> [Float] {
    var out = [Float]()
    out.reserveCapacity(count)
    switch type {
    case .f32:
        for i in 0..<count { out.append(bytes.f32(offset + 4 * i)) }
    case .f16:
        for i in 0..<count { out.append(halfToFloat(bytes.u16(offset + 2 * i))) }
    case .bf16:
        for i in 0..<count { out.append(bf16ToFloat(bytes.u16(offset + 2 * i))) }
    case .q4_0:
        // 18 bytes: half d, then byte j holds element j (low nibble) and j + 16 (high).
        for block in 0..<count / 32 {
            let base = offset + block * 18
            let d = halfToFloat(bytes.u16(base))
            var values = [Float](repeating: 0, count: 32)
            for j in 0..<16 {
                let byte = bytes[base + 2 + j]
                values[j] = Float(Int(byte & 0x0f) - 8) * d
                values[j + 16] = Float(Int(byte >> 4) - 8) * d
            }
            out += values
        }
    case .q8_0:
        for block in 0..<count / 32 {
            let base = offset + block * 34
            let d = halfToFloat(bytes.u16(base))
            for j in 0..<32 { out.append(Float(bytes.i8(base + 2 + j)) * d) }
        }
    case .q4_K:
        // 144 bytes: half d, half dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
        for block in 0..<count / 256 {
            let base = offset + block * 144
            let d = halfToFloat(bytes.u16(base))
            let dmin = halfToFloat(bytes.u16(base + 2))
            let packed = Array(bytes[(base + 4)..<(base + 16)])
            var scales = [Int](repeating: 0, count: 8)
            var mins = [Int](repeating: 0, count: 8)
            for j in 0..<8 {
                if j < 4 {
                    scales[j] = Int(packed[j] & 63)
                    mins[j] = Int(packed[j + 4] & 63)
                } else {
                    scales[j] = Int(packed[j + 4] & 0x0f) | Int(packed[j - 4] >> 6) << 4
                    mins[j] = Int(packed[j + 4] >> 4) | Int(packed[j] >> 6) << 4
                }
            }
            // Sub-block 2c uses the low nibbles of bytes 32c..32c+31, sub-block 2c+1 the high ones.
            for j in 0..<8 {
                let scale = d * Float(scales[j])
                let minimum = dmin * Float(mins[j])
                for l in 0..<32 {
                    let byte = bytes[base + 16 + 32 * (j / 2) + l]
                    let q = j % 2 == 0 ? byte & 0x0f : byte >> 4
                    out.append(scale * Float(q) - minimum)
                }
            }
        }
    case .q6_K:
        // 210 bytes: ql[128], qh[64], int8 scales[16], half d.
        for block in 0..<count / 256 {
            let base = offset + block * 210
            let d = halfToFloat(bytes.u16(base + 208))
            for element in 0..<256 {
                let half = element / 128
                let within = element % 128
                let quarter = within / 32  // which of the four 32-element groups
                let l = within % 32
                let qlByte = bytes[base + 64 * half + l + (quarter % 2 == 1 ? 32 : 0)]
                let low = quarter < 2 ? qlByte & 0x0f : qlByte >> 4
                let qhByte = bytes[base + 128 + 32 * half + l]
                let high = (qhByte >> (2 * UInt8(quarter))) & 3
                let q = Int(low | high << 4) - 32
                let scale = bytes.i8(base + 192 + element / 16)
                out.append(d * Float(scale) * Float(q))
            }
        }
    case .q8_K:
        // 292 bytes: float d, 256 int8, 16 int16 group sums.
        for block in 0..<count / 256 {
            let base = offset + block * 292
            let d = bytes.f32(base)
            for j in 0..<256 { out.append(d * Float(bytes.i8(base + 4 + j))) }
        }
    default:
        fatalError("no reference decoder for \(type)")
    }
    return out
}

// MARK: - Random encoded data

/// Random bytes forming `count` elements of `type`, with the float scale fields
/// set to finite values of a sensible magnitude so results stay comparable.
func randomEncodedRow(_ type: GGMLType, count: Int, rng: inout TestRandom) -> [UInt8] {
    var bytes = (0..<type.byteCount(elements: count)).map { _ in rng.byte() }
    switch type {
    case .f32:
        for i in 0..<count { bytes.setF32(4 * i, rng.gaussian()) }
    case .f16:
        for i in 0..<count { bytes.setU16(2 * i, floatToHalf(rng.gaussian())) }
    case .bf16:
        for i in 0..<count { bytes.setU16(2 * i, UInt16(truncatingIfNeeded: rng.gaussian().bitPattern >> 16)) }
    case .q4_0:
        for block in 0..<count / 32 { bytes.setU16(block * 18, floatToHalf(rng.uniform(-0.1, 0.1))) }
    case .q8_0:
        for block in 0..<count / 32 { bytes.setU16(block * 34, floatToHalf(rng.uniform(-0.02, 0.02))) }
    case .q4_K:
        for block in 0..<count / 256 {
            bytes.setU16(block * 144, floatToHalf(rng.uniform(0, 0.01)))
            bytes.setU16(block * 144 + 2, floatToHalf(rng.uniform(0, 0.01)))
        }
    case .q6_K:
        for block in 0..<count / 256 { bytes.setU16(block * 210 + 208, floatToHalf(rng.uniform(-0.002, 0.002))) }
    case .q8_K:
        for block in 0..<count / 256 {
            let base = block * 292
            bytes.setF32(base, rng.uniform(-0.05, 0.05))
            for g in 0..<16 {
                var sum = 0
                for j in 0..<16 { sum += bytes.i8(base + 4 + 16 * g + j) }
                bytes.setU16(base + 260 + 2 * g, UInt16(bitPattern: Int16(sum)))
            }
        }
    default:
        fatalError("no generator for \(type)")
    }
    return bytes
}

/// The weight types the engine computes with.
let weightTypes: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q8_0, .q4_K, .q6_K]
