/// Decodes token ids one at a time, returning the text each id completes.
///
/// A character outside the vocabulary is generated as several byte tokens, so the bytes
/// of one UTF-8 sequence can arrive over several ids. The decoder holds back a trailing
/// sequence while it is a valid but incomplete prefix, and returns it once its last byte
/// arrives; it never returns U+FFFD for a sequence that could still complete. Bytes that
/// can no longer form a valid character are returned at once as U+FFFD, exactly as
/// ``LlamaTokenizer/decode(_:)`` would show them.
///
/// For ids `ids`, the outputs of ``append(_:)`` for each id, followed by ``finish()``,
/// concatenate to `tokenizer.decode(ids)` (when the decoder `startsText`).
public struct StreamingDecoder: Sendable {
    /// The tokenizer whose pieces are decoded.
    public let tokenizer: LlamaTokenizer
    /// Bytes of an incomplete trailing UTF-8 sequence (at most three).
    private var pending: [UInt8] = []
    /// Whether the next id is the first of a text, whose leading space the vocabulary's
    /// space prefix accounts for.
    private var nextIsFirstToken: Bool

    /// - Parameters:
    ///   - tokenizer: the tokenizer whose vocabulary the ids come from.
    ///   - startsText: true if the first id appended starts the text, so that it is decoded
    ///     like the first id given to ``LlamaTokenizer/decode(_:)`` (one leading space
    ///     removed); false to continue a text, for example the ids generated after a
    ///     prompt, keeping every space.
    public init(tokenizer: LlamaTokenizer, startsText: Bool = true) {
        self.tokenizer = tokenizer
        self.nextIsFirstToken = startsText
    }

    /// Whether bytes are being held back waiting for the rest of a character.
    public var hasPendingBytes: Bool { !pending.isEmpty }

    /// Adds one token id and returns the text it completes (possibly empty).
    ///
    /// - Precondition: `0 <= id < tokenizer.vocabularySize`.
    public mutating func append(_ id: Int32) -> String {
        var bytes = pending
        tokenizer.appendPiece(of: id, isFirstToken: nextIsFirstToken, to: &bytes)
        nextIsFirstToken = false
        let held = StreamingDecoder.incompleteSuffixLength(bytes)
        pending = Array(bytes[(bytes.count - held)...])
        return String(decoding: bytes[..<(bytes.count - held)], as: UTF8.self)
    }

    /// Ends the stream: returns the held-back bytes of an unfinished character as U+FFFD,
    /// or "" if there are none, and resets the decoder for a new text continuing the old.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    // MARK: - UTF-8 prefix check

    /// The length of the trailing bytes of `bytes` that are a valid but incomplete UTF-8
    /// sequence (0 if the bytes end at a character boundary or in bytes that are invalid
    /// whatever follows).
    public static func incompleteSuffixLength(_ bytes: [UInt8]) -> Int {
        let count = bytes.count
        var length = 1
        while length <= min(3, count) {
            let lead = bytes[count - length]
            if lead & 0xC0 == 0x80 {
                // A continuation byte: the sequence starts further back.
                length += 1
                continue
            }
            let needed: Int
            var secondByteRange: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: needed = 2
            case 0xE0: needed = 3; secondByteRange = 0xA0...0xBF
            case 0xE1...0xEC, 0xEE...0xEF: needed = 3
            case 0xED: needed = 3; secondByteRange = 0x80...0x9F
            case 0xF0: needed = 4; secondByteRange = 0x90...0xBF
            case 0xF1...0xF3: needed = 4
            case 0xF4: needed = 4; secondByteRange = 0x80...0x8F
            default: return 0  // ASCII, or a byte that never starts a sequence
            }
            guard needed > length else { return 0 }  // complete (or over-long: invalid)
            if length >= 2 && !secondByteRange.contains(bytes[count - length + 1]) { return 0 }
            return length
        }
        return 0
    }
}
