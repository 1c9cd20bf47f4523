import TestSupport
import Foundation
import LlamaTokenizer
import Testing

@Suite("Encoding with the Llama 2 vocabulary")
struct EncodingTests {
    let tokenizer = Fixtures.llama2

    @Test("the vocabulary file loads with Llama 2's settings")
    func vocabularyLoads() {
        #expect(tokenizer.vocabularySize == 32000)
        #expect(tokenizer.bosID == 1)
        #expect(tokenizer.eosID == 2)
        #expect(tokenizer.vocabulary.unknownID == 0)
        #expect(tokenizer.vocabulary.addBOS)
        #expect(tokenizer.vocabulary.addSpacePrefix)
        #expect(tokenizer.isControl(1) && tokenizer.isControl(2))
        #expect(!tokenizer.isControl(0) && !tokenizer.isControl(15043))
    }

    @Test("every llama.cpp test vector encodes to the expected ids")
    func llamaCppVectors() throws {
        let vectors = try Fixtures.llamaCppVectors()
        #expect(vectors.count == 46)
        for (input, expected) in vectors {
            let ids = tokenizer.encode(input, addBOS: false)
            #expect(ids == expected, "input \(input.debugDescription)")
            #expect(tokenizer.encode(input) == [1] + expected, "input \(input.debugDescription) with BOS")
        }
    }

    @Test("random texts encode as llama.cpp encoded them")
    func llamaCppReference() throws {
        // Generated once by llama.cpp (through llama-cpp-python 0.3.36) from this vocabulary.
        struct Case: Decodable { let text: String; let ids: [Int32] }
        let lines = try String(contentsOf: Fixtures.url("llama-cpp-reference.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        #expect(lines.count == 410)
        var mismatches = 0
        for line in lines {
            let reference = try JSONDecoder().decode(Case.self, from: Data(line.utf8))
            let ids = tokenizer.encode(reference.text, addBOS: false)
            if ids != reference.ids { mismatches += 1 }
            #expect(ids == reference.ids, "text \(reference.text.debugDescription)")
        }
        #expect(mismatches == 0)
    }

    @Test("the heap merger agrees with a quadratic reference on generated texts")
    func agreesWithReference() {
        let reference = ReferenceTokenizer(vocabulary: tokenizer.vocabulary)
        var rng = SeededGenerator(seed: 0x5EED_0001)
        for _ in 0..<300 {
            let text = RandomText.make(pieces: Int.random(in: 1...12, using: &rng), using: &rng, allowSentencePieceSpace: true)
            #expect(tokenizer.encode(text, addBOS: false) == reference.encode(text, addBOS: false), "text \(text.debugDescription)")
        }
    }

    @Test("special token texts in the input are plain text")
    func controlTextsAreNotParsed() {
        // llama.cpp without parse_special: "<s>" is "▁<", "s", ">".
        #expect(tokenizer.encode("<s>", addBOS: false) == [529, 29879, 29958])
        #expect(!tokenizer.encode("</s><unk>", addBOS: false).contains { $0 <= 2 })
    }

    @Test("the empty text is BOS alone")
    func emptyText() {
        #expect(tokenizer.encode("") == [1])
        #expect(tokenizer.encode("", addBOS: false) == [])
    }

    @Test("a 225 KB text encodes quickly and decodes back")
    func largeText() throws {
        var rng = SeededGenerator(seed: 42)
        var text = ""
        let vectors = try Fixtures.llamaCppVectors().map(\.input)
        while text.utf8.count < 225 * 1024 {
            text += vectors.randomElement(using: &rng)!
            text += RandomText.make(pieces: 4, using: &rng)
        }
        let clock = ContinuousClock()
        var ids: [Int32] = []
        let elapsed = clock.measure { ids = tokenizer.encode(text, addBOS: false) }
        #expect(Array(tokenizer.decode(ids).utf8) == Array(text.utf8))
        // Generous enough for an unoptimised build on a busy machine; a release build takes
        // about 0.1 s for this text.
        #expect(elapsed < .seconds(10), "encoding \(text.utf8.count) bytes took \(elapsed)")
    }
}
