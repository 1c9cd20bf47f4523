import TestSupport
import LlamaTokenizer
import Testing

@Suite("Streaming decoder")
struct StreamingDecoderTests {
    let tokenizer = Fixtures.llama2

    @Test("a character split over byte tokens comes out whole when its last byte arrives")
    func splitCharacter() {
        var decoder = tokenizer.makeStreamingDecoder(startsText: false)
        // " 🦙." = ▁, F0 9F A6 99, "."
        #expect(decoder.append(29871) == " ")
        #expect(decoder.append(243) == "")
        #expect(decoder.hasPendingBytes)
        #expect(decoder.append(162) == "")
        #expect(decoder.append(169) == "")
        #expect(decoder.append(156) == "🦙")
        #expect(!decoder.hasPendingBytes)
        #expect(decoder.append(29889) == ".")
        #expect(decoder.finish() == "")
    }

    @Test("the first id of a text loses its leading space, later ids keep theirs")
    func leadingSpace() {
        var decoder = tokenizer.makeStreamingDecoder()
        #expect(decoder.append(15043) == "Hello")
        #expect(decoder.append(3186) == " world")
        var continuing = tokenizer.makeStreamingDecoder(startsText: false)
        #expect(continuing.append(15043) == " Hello")
        var afterBOS = tokenizer.makeStreamingDecoder()
        #expect(afterBOS.append(1) == "")
        #expect(afterBOS.append(15043) == " Hello")
    }

    @Test("bytes that can no longer complete come out as U+FFFD at once")
    func invalidBytes() {
        var decoder = tokenizer.makeStreamingDecoder(startsText: false)
        #expect(decoder.append(243) == "")          // F0: could start a 4-byte sequence
        #expect(decoder.append(68) == "\u{FFFD}A")  // "A" (0x41) shows it cannot
        #expect(decoder.append(227) == "")          // E0
        #expect(decoder.append(131) == "\u{FFFD}\u{FFFD}")  // 80 after E0 is never valid
        #expect(decoder.append(230) == "")          // E3
        #expect(decoder.finish() == "\u{FFFD}")     // the stream ended inside a character
    }

    @Test("text encoded and streamed back never shows U+FFFD and equals decode", arguments: [7, 8, 9])
    func streamedTextMatchesDecode(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        for _ in 0..<150 {
            let text = RandomText.make(pieces: Int.random(in: 1...25, using: &rng), using: &rng)
            let ids = tokenizer.encode(text, addBOS: Bool.random(using: &rng))
            var decoder = tokenizer.makeStreamingDecoder()
            var streamed = ""
            for id in ids {
                let chunk = decoder.append(id)
                #expect(!chunk.unicodeScalars.contains("\u{FFFD}") || text.unicodeScalars.contains("\u{FFFD}"))
                streamed += chunk
            }
            #expect(!decoder.hasPendingBytes)
            streamed += decoder.finish()
            #expect(Array(streamed.utf8) == Array(tokenizer.decode(ids).utf8))
        }
    }

    @Test("arbitrary id sequences stream to exactly what decode gives", arguments: [11, 12, 13])
    func arbitraryIDs(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        for _ in 0..<300 {
            // Mostly byte tokens (ids 3...258), so that valid, truncated and invalid UTF-8
            // sequences all occur, mixed with ordinary and control tokens.
            let ids: [Int32] = (0..<Int.random(in: 0...20, using: &rng)).map { _ in
                switch Int.random(in: 0..<10, using: &rng) {
                case 0: return Int32.random(in: 0...2, using: &rng)
                case 1, 2: return Int32.random(in: 259..<32000, using: &rng)
                default: return Int32.random(in: 3...258, using: &rng)
                }
            }
            var decoder = tokenizer.makeStreamingDecoder()
            var streamed = ""
            for id in ids { streamed += decoder.append(id) }
            streamed += decoder.finish()
            #expect(Array(streamed.utf8) == Array(tokenizer.decode(ids).utf8), "ids \(ids)")
        }
    }
}
