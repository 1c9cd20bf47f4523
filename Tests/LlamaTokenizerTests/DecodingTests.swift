import TestSupport
import Foundation
import LlamaTokenizer
import Testing

@Suite("Decoding")
struct DecodingTests {
    let tokenizer = Fixtures.llama2

    @Test("pieces: ▁ is a space, byte tokens are bytes, control tokens are empty")
    func pieces() {
        #expect(tokenizer.piece(15043) == Array(" Hello".utf8))   // "▁Hello"
        #expect(tokenizer.piece(29871) == [0x20])                 // "▁"
        #expect(tokenizer.piece(13) == [0x0A])                    // "<0x0A>"
        #expect(tokenizer.piece(243) == [0xF0])                   // "<0xF0>"
        #expect(tokenizer.piece(1).isEmpty)                       // "<s>"
        #expect(tokenizer.piece(2).isEmpty)                       // "</s>"
        #expect(tokenizer.piece(0).isEmpty)                       // "<unk>"
    }

    @Test("the first token loses one leading space, as in llama.cpp's detokenizer")
    func leadingSpace() {
        // Values observed from llama.cpp's llama_detokenize (remove_special and
        // unparse_special off) on this vocabulary.
        #expect(tokenizer.decode([15043]) == "Hello")
        #expect(tokenizer.decode([1, 15043]) == " Hello")
        #expect(tokenizer.decode([29871, 15043]) == " Hello")
        #expect(tokenizer.decode([1, 29871, 15043]) == "  Hello")
        #expect(tokenizer.decode([2, 15043]) == " Hello")
        #expect(tokenizer.decode([15043, 2]) == "Hello")
        #expect(tokenizer.decode([]) == "")
    }

    @Test("random id sequences decode to the bytes llama.cpp's detokenizer gives")
    func llamaCppDetokenize() throws {
        // Generated once with llama.cpp's llama_detokenize (through llama-cpp-python 0.3.36),
        // remove_special and unparse_special off: ordinary, byte and control tokens mixed.
        struct Case: Decodable { let ids: [Int32]; let hex: String }
        let lines = try String(contentsOf: Fixtures.url("llama-cpp-detokenize.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 300)
        for line in lines {
            let reference = try JSONDecoder().decode(Case.self, from: Data(line.utf8))
            let hex = tokenizer.decodeBytes(reference.ids).map { String($0, radix: 16) }.map { $0.count == 1 ? "0" + $0 : $0 }.joined()
            #expect(hex == reference.hex, "ids \(reference.ids)")
        }
    }

    @Test("bytes of a character split over byte tokens join up")
    func byteTokens() {
        // "🦙" is F0 9F A6 99, which Llama 2 has no token for.
        let ids = tokenizer.encode("🦙", addBOS: false)
        #expect(ids == [29871, 243, 162, 169, 156])
        #expect(tokenizer.decode(ids) == "🦙")
        #expect(tokenizer.decodeBytes(Array(ids.dropFirst())) == [0xF0, 0x9F, 0xA6, 0x99])
        // An incomplete sequence becomes U+FFFD.
        #expect(tokenizer.decode([243, 162]) == "\u{FFFD}")
    }

    /// The round-trip relation: encoding puts a space in front (the space prefix) and
    /// decoding takes one space off the first token, so without BOS a text comes back
    /// byte for byte. With BOS the first token is BOS, nothing is taken off, and the text
    /// comes back with the prefix space in front. "▁" in the input is indistinguishable
    /// from an escaped space and comes back as " ".
    @Test("decode(encode(s)) round-trips generated texts", arguments: [1, 2, 3, 4])
    func roundTrip(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        for _ in 0..<250 {
            let text = RandomText.make(pieces: Int.random(in: 0...30, using: &rng), using: &rng)
            let bytes = Array(text.utf8)
            #expect(tokenizer.decodeBytes(tokenizer.encode(text, addBOS: false)) == bytes, "text \(text.debugDescription)")
            let withBOS = tokenizer.encode(text)
            #expect(withBOS.first == tokenizer.bosID)
            #expect(tokenizer.decodeBytes(withBOS) == (text.isEmpty ? [] : [0x20] + bytes), "text \(text.debugDescription)")
            // Compare as scalars too: String equality would accept canonically equivalent text.
            #expect(Array(tokenizer.decode(tokenizer.encode(text, addBOS: false)).unicodeScalars) == Array(text.unicodeScalars))
        }
    }

    @Test("a literal ▁ decodes as a space")
    func sentencePieceSpaceInInput() {
        var rng = SeededGenerator(seed: 99)
        for _ in 0..<100 {
            let text = RandomText.make(pieces: Int.random(in: 1...10, using: &rng), using: &rng) + "▁x▁ ▁"
            let expected = String(String.UnicodeScalarView(text.unicodeScalars.map { $0 == "▁" ? " " : $0 }))
            #expect(Array(tokenizer.decode(tokenizer.encode(text, addBOS: false)).utf8) == Array(expected.utf8))
        }
    }
}
