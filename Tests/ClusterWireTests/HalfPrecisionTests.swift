import TestSupport
import ClusterWire
import Testing

@Suite("Half precision and CRC-32C")
struct HalfPrecisionTests {
    static let implementations: [RoutineImplementation] = [.automatic, .portable]

    @Test("all 65,536 halves widen exactly like Swift's Float16", arguments: implementations)
    func decodeEveryHalf(implementation: RoutineImplementation) {
        let halves = (0...UInt16.max).map { $0 }
        var floats = [Float](repeating: 0, count: halves.count)
        halves.withUnsafeBufferPointer { source in
            floats.withUnsafeMutableBufferPointer { HalfPrecision.decode(source, into: $0, using: implementation) }
        }
        var mismatches = 0
        for (bits, value) in zip(halves, floats) {
            let expected = Float(Float16(bitPattern: bits))
            if expected.isNaN {
                if !value.isNaN { mismatches += 1 }
            } else if value.bitPattern != expected.bitPattern {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
    }

    @Test("floats narrow to the same half as Swift's Float16 (round to nearest even)", arguments: implementations)
    func encodeMatchesScalarConversion(implementation: RoutineImplementation) {
        var inputs: [Float] = [
            0, -0, 1, -1, 0.1, 65504, -65504, 65519.996, 65520, -65520, 65536, 1e10,
            .infinity, -.infinity, .nan, -.nan, .signalingNaN, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
            5.9604645e-8, 2.9802322e-8, 2.9802326e-8, 8.940697e-8, 6.097555e-5, 6.1035156e-5, 6.103515e-5,
            1.0009766, 1.0004883, 1.0014648, 2049, 2051, 4097, 4099,
        ]
        // Every 4099th float bit pattern: all exponents, many mantissas, both signs.
        var pattern: UInt32 = 0
        while true {
            inputs.append(Float(bitPattern: pattern))
            let (next, overflow) = pattern.addingReportingOverflow(4099)
            if overflow { break }
            pattern = next
        }
        // Exact halfway points between neighbouring halves in the normal and subnormal ranges.
        for bits in stride(from: UInt16(0), to: 0x7BFF, by: 37) {
            let low = Float(Float16(bitPattern: bits)), high = Float(Float16(bitPattern: bits + 1))
            inputs.append((low + high) / 2)
            inputs.append(-(low + high) / 2)
        }
        var halves = [UInt16](repeating: 0, count: inputs.count)
        inputs.withUnsafeBufferPointer { source in
            halves.withUnsafeMutableBufferPointer { HalfPrecision.encode(source, into: $0, using: implementation) }
        }
        var mismatches: [Float] = []
        for (value, bits) in zip(inputs, halves) {
            let expected = Float16(value)
            let matches = expected.isNaN ? Float16(bitPattern: bits).isNaN : bits == expected.bitPattern
            if !matches { mismatches.append(value) }
        }
        #expect(mismatches.isEmpty, "first mismatches: \(mismatches.prefix(5))")
        #expect(inputs.count > 1_000_000)
    }

    @Test("every length, so the vector loops and their tails agree", arguments: implementations)
    func everyLength(implementation: RoutineImplementation) {
        var generator = SeededGenerator(seed: 3)
        for count in 0...70 {
            let values = (0..<count).map { _ in Float.random(in: -70000...70000, using: &generator) }
            var halves = [UInt16](repeating: 0xFFFF, count: count)
            var back = [Float](repeating: .nan, count: count)
            values.withUnsafeBufferPointer { source in
                halves.withUnsafeMutableBufferPointer { HalfPrecision.encode(source, into: $0, using: implementation) }
            }
            halves.withUnsafeBufferPointer { source in
                back.withUnsafeMutableBufferPointer { HalfPrecision.decode(source, into: $0, using: implementation) }
            }
            #expect(halves == values.map { Float16($0).bitPattern }, "count \(count)")
            #expect(back == values.map { Float(Float16($0)) }, "count \(count)")
        }
    }

    @Test("CRC-32C check value and chaining")
    func crcCheckValue() {
        let digits = Array("123456789".utf8)
        for implementation in Self.implementations {
            #expect(digits.withUnsafeBytes { CRC32C.checksum($0, using: implementation) } == 0xE306_9283)
            let first = digits.prefix(4).withUnsafeBytes { CRC32C.checksum($0, using: implementation) }
            let both = digits.dropFirst(4).withUnsafeBytes { CRC32C.checksum($0, continuing: first, using: implementation) }
            #expect(both == 0xE306_9283)
            #expect([UInt8]().withUnsafeBytes { CRC32C.checksum($0, using: implementation) } == 0)
            // 32 zero bytes: the RFC 3720 (iSCSI) test vector.
            #expect([UInt8](repeating: 0, count: 32).withUnsafeBytes { CRC32C.checksum($0, using: implementation) } == 0x8A91_36AA)
        }
    }

    @Test("CRC-32C matches a bit-by-bit reference at every length and alignment")
    func crcMatchesReference() {
        var generator = SeededGenerator(seed: 11)
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &generator) }
        func reference(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            return ~crc
        }
        for start in 0..<9 {
            for end in stride(from: start, through: data.count, by: 7) {
                let slice = data[start..<end]
                let expected = reference(slice)
                for implementation in Self.implementations {
                    #expect(slice.withUnsafeBytes { CRC32C.checksum($0, using: implementation) } == expected)
                }
            }
        }
    }
}
