/// The Llama 2 SentencePiece tokenizer, producing the same token ids as llama.cpp's "llama"
/// (SPM) tokenizer and decoding them back as llama.cpp's detokenizer does.
///
/// Encoding: user-defined tokens are split out of the text first; each remaining piece of
/// text gets a leading space if it starts the text or follows such a token (when the
/// vocabulary's `addSpacePrefix` is set), spaces become "▁" (U+2581), and the result is
/// merged pair by pair by token score (see `mergeFragment`). Characters left that are not
/// tokens are written as byte-fallback tokens `<0xHH>`. Control and unknown token texts in
/// the input (such as "<s>") are treated as plain text, as llama.cpp does without
/// `parse_special`.
///
/// Immutable after `init`; safe to share between threads.
public final class LlamaTokenizer: Sendable {
    /// The vocabulary this tokenizer was built from.
    public let vocabulary: Vocabulary

    let table: TokenTable
    /// The token of each byte value for byte fallback.
    let byteTokens: [Int32]
    /// `pieceBytes[pieceStart[id] ..< pieceStart[id + 1]]` is what token `id` decodes to.
    private let pieceBytes: [UInt8]
    private let pieceStart: [Int32]
    /// User-defined tokens, longest text first, split out of the text before merging.
    private let userDefinedTokens: [UserDefinedToken]

    private struct UserDefinedToken: Sendable {
        let id: Int32
        let bytes: [UInt8]
    }

    private enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    /// "▁" (U+2581), the SentencePiece space, in UTF-8.
    static let escapedSpace: [UInt8] = [0xE2, 0x96, 0x81]

    /// Builds the lookup tables for `vocabulary`.
    public init(vocabulary: Vocabulary) {
        self.vocabulary = vocabulary
        let table = TokenTable(texts: vocabulary.tokens)
        self.table = table

        // Byte fallback: the `<0xHH>` token, or else the token made of that byte alone.
        // `Vocabulary` has checked that one of them exists for every byte.
        byteTokens = (0...255).map { byte -> Int32 in
            let hexID = table.lookup(Vocabulary.byteTokenText(UInt8(byte)))
            return hexID >= 0 ? hexID : table.lookup(Vocabulary.rawByteText(UInt8(byte)))
        }

        var bytes: [UInt8] = []
        var starts: [Int32] = [0]
        starts.reserveCapacity(vocabulary.count + 1)
        for id in 0..<vocabulary.count {
            let text = vocabulary.tokens[id]
            switch vocabulary.type(of: Int32(id)) {
            case .normal:
                // "▁" → " "; every other byte as is.
                let utf8 = Array(text.utf8)
                var i = 0
                while i < utf8.count {
                    if i + 2 < utf8.count && utf8[i] == 0xE2 && utf8[i + 1] == 0x96 && utf8[i + 2] == 0x81 {
                        bytes.append(0x20)
                        i += 3
                    } else {
                        bytes.append(utf8[i])
                        i += 1
                    }
                }
            case .userDefined:
                bytes.append(contentsOf: text.utf8)
            case .byte:
                bytes.append(Vocabulary.byteValue(ofByteToken: text)!)
            case .control, .unknown, .unused, .undefined:
                break
            }
            starts.append(Int32(bytes.count))
        }
        pieceBytes = bytes
        pieceStart = starts

        userDefinedTokens = (0..<vocabulary.count)
            .filter { vocabulary.type(of: Int32($0)) == .userDefined }
            .map { UserDefinedToken(id: Int32($0), bytes: Array(vocabulary.tokens[$0].utf8)) }
            .sorted { $0.bytes.count != $1.bytes.count ? $0.bytes.count > $1.bytes.count : $0.id < $1.id }
    }

    // MARK: - Vocabulary facts

    /// The number of tokens; valid ids are `0 ..< vocabularySize`.
    public var vocabularySize: Int { vocabulary.count }

    /// The id of the control or user-defined token written `text` (a chat template's
    /// `<|im_start|>`), or nil when the vocabulary has none.
    public func specialTokenID(_ text: String) -> Int32? {
        let id = table.lookup(text)
        guard id >= 0 else { return nil }
        let type = vocabulary.type(of: id)
        return type == .control || type == .userDefined ? id : nil
    }
    /// The beginning-of-sequence token id (-1 if none).
    public var bosID: Int32 { vocabulary.bosID }
    /// The end-of-sequence token id (-1 if none).
    public var eosID: Int32 { vocabulary.eosID }

    /// Whether `id` is a control token (such as BOS and EOS), which decodes to nothing.
    public func isControl(_ id: Int32) -> Bool {
        vocabulary.type(of: id) == .control
    }

    // MARK: - Encoding

    /// Encodes `text` into token ids.
    ///
    /// - Parameters:
    ///   - text: the text; the empty text encodes to no tokens besides BOS.
    ///   - addBOS: whether to add the special tokens the vocabulary asks for (llama.cpp's
    ///     `add_special`): BOS is prepended when this and the vocabulary's `addBOS` are true.
    public func encode(_ text: String, addBOS: Bool = true) -> [Int32] {
        var output: [Int32] = []
        output.reserveCapacity(text.utf8.count / 2 + 2)
        if addBOS && vocabulary.addBOS {
            output.append(vocabulary.bosID)
        }
        var text = text
        text.withUTF8 { raw in
            guard !raw.isEmpty else { return }
            vocabulary.scores.withUnsafeBufferPointer { scores in
                var escaped: [UInt8] = []
                escaped.reserveCapacity(raw.count * 3 + 3)
                var followsSpecialToken = true
                for fragment in split(raw) {
                    switch fragment {
                    case .token(let id):
                        output.append(id)
                        followsSpecialToken = true
                    case .text(let range):
                        escaped.removeAll(keepingCapacity: true)
                        if vocabulary.addSpacePrefix && followsSpecialToken {
                            escaped.append(contentsOf: LlamaTokenizer.escapedSpace)
                        }
                        for byte in raw[range] {
                            if byte == 0x20 {
                                escaped.append(contentsOf: LlamaTokenizer.escapedSpace)
                            } else {
                                escaped.append(byte)
                            }
                        }
                        escaped.withUnsafeBufferPointer { mergeFragment($0, scores: scores, into: &output) }
                        followsSpecialToken = false
                    }
                }
            }
        }
        return output
    }

    /// Splits the text at every occurrence of a user-defined token, taking the tokens
    /// longest first and each token's occurrences left to right, as llama.cpp does.
    private func split(_ raw: UnsafeBufferPointer<UInt8>) -> [Fragment] {
        var fragments: [Fragment] = [.text(0..<raw.count)]
        for special in userDefinedTokens {
            let pattern = special.bytes
            var next: [Fragment] = []
            for fragment in fragments {
                guard case .text(let range) = fragment else {
                    next.append(fragment)
                    continue
                }
                var start = range.lowerBound
                var position = range.lowerBound
                while position + pattern.count <= range.upperBound {
                    if raw[position] == pattern[0] && raw[position..<(position + pattern.count)].elementsEqual(pattern) {
                        if position > start { next.append(.text(start..<position)) }
                        next.append(.token(special.id))
                        position += pattern.count
                        start = position
                    } else {
                        position += 1
                    }
                }
                if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
            }
            fragments = next
        }
        return fragments
    }

    // MARK: - Decoding

    /// The bytes token `id` contributes to decoded text: "▁" becomes a space, a byte token
    /// `<0xHH>` its byte, a user-defined token its text; control, unknown and unused
    /// tokens contribute nothing. The bytes of one token need not be valid UTF-8.
    ///
    /// - Precondition: `0 <= id < vocabularySize`.
    public func piece(_ id: Int32) -> [UInt8] {
        Array(pieceBytes[pieceRange(id)])
    }

    func pieceRange(_ id: Int32) -> Range<Int> {
        precondition(id >= 0 && Int(id) < vocabulary.count, "token id \(id) outside the vocabulary of \(vocabulary.count)")
        return Int(pieceStart[Int(id)])..<Int(pieceStart[Int(id) + 1])
    }

    /// Appends the piece of `id` to `bytes`; for the first token of a text, drops one
    /// leading space when the vocabulary adds a space prefix (llama.cpp's `lstrip`).
    func appendPiece(of id: Int32, isFirstToken: Bool, to bytes: inout [UInt8]) {
        var range = pieceRange(id)
        if isFirstToken && vocabulary.addSpacePrefix && !range.isEmpty && pieceBytes[range.lowerBound] == 0x20 {
            range = (range.lowerBound + 1)..<range.upperBound
        }
        bytes.append(contentsOf: pieceBytes[range])
    }

    /// Decodes token ids to bytes the way llama.cpp's `llama_detokenize` does with
    /// `remove_special` and `unparse_special` off: the pieces of all tokens, one after
    /// another, except that when the vocabulary adds a space prefix one leading space is
    /// removed from the piece of the *first* id. If that first id is BOS (whose piece is
    /// empty) nothing is removed, so `[BOS, "▁Hello"]` decodes to " Hello" while
    /// `["▁Hello"]` decodes to "Hello".
    ///
    /// - Precondition: every id is in `0 ..< vocabularySize`.
    public func decodeBytes(_ ids: [Int32]) -> [UInt8] {
        var bytes: [UInt8] = []
        for (index, id) in ids.enumerated() {
            appendPiece(of: id, isFirstToken: index == 0, to: &bytes)
        }
        return bytes
    }

    /// Decodes token ids to text (see ``decodeBytes(_:)``); byte sequences that are not
    /// valid UTF-8 become U+FFFD.
    ///
    /// Round trip (vocabulary with a space prefix): for any text `s` without "▁" (U+2581),
    /// `decode(encode(s, addBOS: false))` is `s` byte for byte, and for non-empty `s`,
    /// `decode(encode(s))` with its leading BOS is `" " + s`. A "▁" in the input decodes
    /// as a space.
    public func decode(_ ids: [Int32]) -> String {
        String(decoding: decodeBytes(ids), as: UTF8.self)
    }

    /// A decoder that turns ids into text one at a time; see ``StreamingDecoder``.
    public func makeStreamingDecoder(startsText: Bool = true) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, startsText: startsText)
    }
}
