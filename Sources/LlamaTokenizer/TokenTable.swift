/// Finds the token whose text is a given byte string, without allocating: the token texts
/// live in one contiguous buffer and an open-addressing hash table (linear probing,
/// power-of-two size, at most half full) maps byte strings to ids.
///
/// Immutable after `init`, so it is safe to share between threads.
final class TokenTable: @unchecked Sendable {
    /// UTF-8 bytes of all token texts, one after another.
    private let textBytes: UnsafeMutablePointer<UInt8>
    /// `textStart[id] ..< textStart[id + 1]` is the text of token `id` in `textBytes`.
    private let textStart: UnsafeMutablePointer<Int32>
    /// Hash slots holding token ids, -1 where empty.
    private let slots: UnsafeMutablePointer<Int32>
    private let slotMask: Int
    let tokenCount: Int
    /// The length in bytes of the longest token text; no longer string can be a token.
    let maxTextLength: Int

    init(texts: [String]) {
        tokenCount = texts.count
        var totalBytes = 0
        var longest = 0
        for text in texts {
            totalBytes += text.utf8.count
            longest = max(longest, text.utf8.count)
        }
        maxTextLength = longest
        precondition(totalBytes < Int(Int32.max), "token texts too large")

        textBytes = .allocate(capacity: max(totalBytes, 1))
        textStart = .allocate(capacity: texts.count + 1)
        var offset = 0
        for (id, text) in texts.enumerated() {
            textStart[id] = Int32(offset)
            for byte in text.utf8 {
                textBytes[offset] = byte
                offset += 1
            }
        }
        textStart[texts.count] = Int32(offset)

        var size = 16
        while size < texts.count * 2 { size <<= 1 }
        slotMask = size - 1
        slots = .allocate(capacity: size)
        slots.initialize(repeating: -1, count: size)
        for id in texts.indices {
            let start = Int(textStart[id])
            let length = Int(textStart[id + 1]) - start
            var slot = TokenTable.hash(textBytes + start, length) & slotMask
            while slots[slot] != -1 { slot = (slot + 1) & slotMask }
            slots[slot] = Int32(id)
        }
    }

    deinit {
        textBytes.deallocate()
        textStart.deallocate()
        slots.deallocate()
    }

    /// FNV-1a over the bytes.
    @inline(__always)
    private static func hash(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<count {
            h = (h ^ UInt64(bytes[i])) &* 0x0000_0100_0000_01b3
        }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }

    /// The id of the token whose text is exactly `bytes[0..<count]`, or -1.
    @inline(__always)
    func lookup(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
        if count > maxTextLength { return -1 }
        var slot = TokenTable.hash(bytes, count) & slotMask
        while true {
            let id = slots[slot]
            if id < 0 { return -1 }
            let start = Int(textStart[Int(id)])
            if Int(textStart[Int(id) + 1]) - start == count {
                var equal = true
                for i in 0..<count where textBytes[start + i] != bytes[i] {
                    equal = false
                    break
                }
                if equal { return id }
            }
            slot = (slot + 1) & slotMask
        }
    }

    /// The id of the token whose text is `text`, or -1.
    func lookup(_ text: String) -> Int32 {
        var text = text
        return text.withUTF8 { buffer in
            guard let base = buffer.baseAddress else { return lookup(textBytes, 0) }
            return lookup(base, buffer.count)
        }
    }
}
