// MARK: - Incremental UTF-8 decoding

/// One byte of strict UTF-8 decoding (no overlong forms, no surrogates, nothing above
/// U+10FFFF), starting from a packed partial character (`0` when between characters).
///
/// A partial character is packed into a `UInt32`: bits 0-15 hold the value of the bytes
/// read so far, bits 16-17 the number of continuation bytes still needed, bits 18-23 and
/// 24-29 the low six bits of the smallest and largest byte allowed next.
enum UTF8Step: Equatable {
    /// The byte completes the character `code`.
    case complete(UInt32)
    /// The character is still incomplete: its packed progress `next`, and the range
    /// `low...high` of code points that some completion of it can be.
    case partial(next: UInt32, low: UInt32, high: UInt32)

    /// Decodes `byte` after `progress`; nil if the byte makes the UTF-8 invalid.
    @inline(__always)
    init?(after progress: UInt32, byte: UInt8) {
        let remaining = (progress >> 16) & 3
        if remaining == 0 {
            switch byte {
            case 0x00...0x7F: self = .complete(UInt32(byte))
            case 0xC2...0xDF: self = UTF8Step.started(UInt32(byte & 0x1F), 1, 0x80, 0xBF)
            case 0xE0: self = UTF8Step.started(0, 2, 0xA0, 0xBF)
            case 0xE1...0xEC, 0xEE, 0xEF: self = UTF8Step.started(UInt32(byte & 0x0F), 2, 0x80, 0xBF)
            case 0xED: self = UTF8Step.started(0x0D, 2, 0x80, 0x9F)
            case 0xF0: self = UTF8Step.started(0, 3, 0x90, 0xBF)
            case 0xF1...0xF3: self = UTF8Step.started(UInt32(byte & 0x07), 3, 0x80, 0xBF)
            case 0xF4: self = UTF8Step.started(4, 3, 0x80, 0x8F)
            default: return nil
            }
            return
        }
        let low = 0x80 | (progress >> 18) & 0x3F
        let high = 0x80 | (progress >> 24) & 0x3F
        guard UInt32(byte) >= low && UInt32(byte) <= high else { return nil }
        let value = (progress & 0xFFFF) << 6 | UInt32(byte & 0x3F)
        self = remaining == 1 ? .complete(value) : UTF8Step.started(value, remaining - 1, 0x80, 0xBF)
    }

    /// A partial character of `value` needing `remaining` more bytes in `low...high` first.
    private static func started(_ value: UInt32, _ remaining: UInt32, _ low: UInt32, _ high: UInt32) -> UTF8Step {
        let next = value | remaining << 16 | (low & 0x3F) << 18 | (high & 0x3F) << 24
        let shift = 6 * (remaining - 1)
        let smallest = (value << 6 | (low & 0x3F)) << shift
        let largest = (value << 6 | (high & 0x3F)) << shift | ((1 << shift) - 1)
        return .partial(next: next, low: smallest, high: largest)
    }
}
