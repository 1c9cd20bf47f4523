import TestSupport
import CLlamaKernels
import GGUF
import LlamaKernels
import Testing

/// Q4_0 and Q8_0 weights repacked in groups of eight rows (`lk_x8_pack`): the product on the
/// repacked bytes is bitwise the AVX2 product on the original rows, at every level (the
/// portable loop keeps the same order), for any batch and row range (decode walks up to four
/// parts of a range side by side: 1 to 11 groups of eight cover every split).
@Suite("Q4_0 and Q8_0 repacked in groups of eight rows")
struct PackedX8Tests {
    @Test("the product on repacked rows equals the AVX2 product on the original rows bitwise",
          arguments: [GGMLType.q4_0, .q8_0], [(8, 32), (16, 256), (40, 4096), (64, 128), (88, 64)])
    func packedEqualsOriginal(type: GGMLType, shape: (rows: Int, cols: Int)) throws {
        let (rows, cols) = shape
        let typeId = Int32(type.rawValue)
        let rowBytes = type.byteCount(elements: cols)
        var rng = TestRandom(seed: UInt64(rows * 7919 + cols + Int(typeId)))
        var weights = [UInt8]()
        for _ in 0..<rows { weights += randomEncodedRow(type, count: cols, rng: &rng) }
        var packed = [UInt8](repeating: 0, count: Int(lk_x8_size(typeId, Int64(rows), Int64(cols))))
        #expect(packed.count == weights.count)
        let status = weights.withUnsafeBytes { w in
            packed.withUnsafeMutableBytes { lk_x8_pack(typeId, w.baseAddress!, rowBytes, Int64(rows), Int64(cols), $0.baseAddress!) }
        }
        #expect(status == 0)
        for batch in [1, 2, 5, 16, 17, 40] {
            let (encoded, actRow) = encodeActivationRows(type, rng.floats(batch * cols), batch: batch, cols: cols)
            func run(packedLayout: Bool, rowBegin: Int = 0, rowEnd: Int? = nil) -> [Float] {
                var out = [Float](repeating: .nan, count: batch * rows)
                encoded.withUnsafeBytes { x in
                    if packedLayout {
                        packed.withUnsafeBytes { p in
                            lk_matmul_x8(typeId, p.baseAddress!, Int64(cols), x.baseAddress!, actRow, Int64(batch), &out, Int64(rows),
                                         Int64(rowBegin), Int64(rowEnd ?? rows))
                        }
                    } else {
                        weights.withUnsafeBytes { w in
                            lk_matmul(typeId, w.baseAddress!, rowBytes, Int64(cols), x.baseAddress!, actRow, Int64(batch), &out,
                                      Int64(rows), Int64(rowBegin), Int64(rowEnd ?? rows))
                        }
                    }
                }
                return out
            }
            guard KernelISA.available.contains(.avx2) else {
                // Without AVX2 there is no original-layout product in this order to compare with;
                // the portable loop is checked against the AVX2 one on machines that have it.
                continue
            }
            KernelISA.force(.avx2)
            let original = run(packedLayout: false)
            #expect(!original.contains { $0.isNaN })
            for level in KernelISA.available {
                KernelISA.force(level)
                let whole = run(packedLayout: true)
                #expect(bitwiseDifferences(whole, original).count == 0, "\(type) \(level) rows \(rows) cols \(cols) batch \(batch)")
                if rows >= 16 {
                    // Groups of eight done separately: the same outputs.
                    var split = [Float](repeating: .nan, count: batch * rows)
                    let first = run(packedLayout: true, rowBegin: 0, rowEnd: 8)
                    let rest = run(packedLayout: true, rowBegin: 8, rowEnd: rows)
                    for b in 0..<batch {
                        for r in 0..<rows { split[b * rows + r] = r < 8 ? first[b * rows + r] : rest[b * rows + r] }
                    }
                    #expect(bitwiseDifferences(split, original).count == 0, "\(type) \(level) split rows \(rows) batch \(batch)")
                }
            }
            KernelISA.force(KernelISA.best)
        }
    }

    @Test("rows that are not a multiple of eight, columns not a multiple of 32, or other types are refused")
    func refusesOddShapes() {
        var out = [UInt8](repeating: 0, count: 4096)
        let w = [UInt8](repeating: 0, count: 4096)
        let q4 = Int32(GGMLType.q4_0.rawValue), q8 = Int32(GGMLType.q8_0.rawValue), f16 = Int32(GGMLType.f16.rawValue)
        #expect(lk_x8_pack(q4, w, 18, 12, 32, &out) == -1)
        #expect(lk_x8_pack(q4, w, 36, 8, 48, &out) == -1)
        #expect(lk_x8_pack(q8, w, 34, 12, 32, &out) == -1)
        #expect(lk_x8_pack(f16, w, 64, 8, 32, &out) == -1)
        #expect(lk_x8_size(f16, 8, 32) == 0)
        #expect(lk_x8_pack(q4, w, 18, 8, 32, &out) == 0)
        #expect(lk_x8_pack(q8, w, 34, 8, 32, &out) == 0)
        #expect(lk_x8_size(q8, 8, 64) == 8 * 68)
    }
}
