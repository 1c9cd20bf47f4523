// MARK: - Sets of Unicode code points

/// A set of Unicode code points as sorted, disjoint, non-adjacent closed ranges, with a
/// bitmap for the ASCII range (the common case when matching).
struct CodePointSet: Hashable, Sendable {
    /// The largest Unicode code point.
    static let maxCodePoint: UInt32 = 0x10FFFF

    /// Range bounds, two per range: `[lo0, hi0, lo1, hi1, ...]`, sorted and merged.
    private(set) var bounds: [UInt32]
    private var asciiLow: UInt64 = 0
    private var asciiHigh: UInt64 = 0

    /// The set of the given ranges (in any order, overlapping or not).
    init(ranges: [ClosedRange<UInt32>]) {
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var merged: [UInt32] = []
        for range in sorted {
            if let last = merged.last, range.lowerBound <= last &+ 1 {
                merged[merged.count - 1] = max(last, range.upperBound)
            } else {
                merged.append(range.lowerBound)
                merged.append(range.upperBound)
            }
        }
        bounds = merged
        for index in stride(from: 0, to: merged.count, by: 2) where merged[index] < 128 {
            for code in merged[index]...min(merged[index + 1], 127) {
                if code < 64 { asciiLow |= 1 << UInt64(code) } else { asciiHigh |= 1 << UInt64(code - 64) }
            }
        }
    }

    /// The set of one code point.
    init(single code: UInt32) {
        self.init(ranges: [code...code])
    }

    /// Every code point.
    static let all = CodePointSet(ranges: [0...maxCodePoint])

    /// The code points not in this set.
    var complement: CodePointSet {
        var ranges: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for index in stride(from: 0, to: bounds.count, by: 2) {
            if bounds[index] > next { ranges.append(next...(bounds[index] - 1)) }
            next = bounds[index + 1] &+ 1
        }
        if next <= CodePointSet.maxCodePoint {
            ranges.append(next...CodePointSet.maxCodePoint)
        }
        return CodePointSet(ranges: ranges)
    }

    /// Whether `code` is in the set.
    @inline(__always)
    func contains(_ code: UInt32) -> Bool {
        if code < 64 { return asciiLow & (1 << UInt64(code)) != 0 }
        if code < 128 { return asciiHigh & (1 << UInt64(code - 64)) != 0 }
        var index = 0
        while index < bounds.count {
            if code < bounds[index] { return false }
            if code <= bounds[index + 1] { return true }
            index += 2
        }
        return false
    }

    /// Whether some code point in `low...high` is in the set.
    func intersects(_ low: UInt32, _ high: UInt32) -> Bool {
        var index = 0
        while index < bounds.count {
            if bounds[index] > high { return false }
            if bounds[index + 1] >= low { return true }
            index += 2
        }
        return false
    }
}
