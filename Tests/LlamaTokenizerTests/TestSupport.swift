import Foundation
import TestSupport
import GGUF
import LlamaTokenizer

// MARK: - Fixtures

enum Fixtures {
    static func url(_ name: String) -> URL {
        guard let base = Bundle.module.resourceURL else { fatalError("test bundle has no resources") }
        return base.appendingPathComponent("Fixtures").appendingPathComponent(name)
    }

    static let vocabularyPath = url("ggml-vocab-llama-spm.gguf").path

    /// The Llama 2 tokenizer, loaded once for all tests.
    static let llama2: LlamaTokenizer = {
        do {
            return LlamaTokenizer(vocabulary: try Vocabulary(gguf: try GGUFFile(path: vocabularyPath)))
        } catch {
            fatalError("cannot load \(vocabularyPath): \(error)")
        }
    }()

    /// The llama.cpp test vectors, read the way its test-tokenizer-0 reads them: the .inp
    /// file is split on "\n__ggml_vocab_test__\n" (text after the last separator, if any,
    /// is one more case), the .out file into lines (a final newline ends the last line
    /// rather than starting an empty one), each line stripped of surrounding whitespace
    /// and split on single spaces into ids.
    static func llamaCppVectors() throws -> [(input: String, expected: [Int32])] {
        let input = try Data(contentsOf: url("ggml-vocab-llama-spm.gguf.inp"))
        let output = try String(contentsOf: url("ggml-vocab-llama-spm.gguf.out"), encoding: .utf8)
        guard let raw = String(data: input, encoding: .utf8) else { throw FixtureError("the .inp file is not UTF-8") }

        var inputs: [String] = []
        let separator = Array("\n__ggml_vocab_test__\n".utf8)
        let bytes = Array(raw.utf8)
        var position = 0
        while position < bytes.count {
            guard let next = find(separator, in: bytes, from: position) else {
                inputs.append(String(decoding: bytes[position...], as: UTF8.self))
                break
            }
            inputs.append(String(decoding: bytes[position..<next], as: UTF8.self))
            position = next + separator.count
        }

        var lines = output.components(separatedBy: "\n")
        if output.hasSuffix("\n") { lines.removeLast() }
        guard lines.count == inputs.count else {
            throw FixtureError("\(inputs.count) inputs but \(lines.count) expected outputs")
        }
        return try zip(inputs, lines).map { input, line in
            let stripped = line.trimmingCharacters(in: .whitespacesAndNewlines)
            let ids = try stripped.isEmpty ? [] : stripped.split(separator: " ", omittingEmptySubsequences: false).map { field -> Int32 in
                guard let id = Int32(field) else { throw FixtureError("bad id \(field) in line \(line.debugDescription)") }
                return id
            }
            return (input, ids)
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var i = start
        while i + needle.count <= haystack.count {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Seeded random text

enum RandomText {
    /// A string of `pieces` random runs drawn from many scripts and shapes: ASCII words,
    /// digits, punctuation, runs of spaces, tabs and newlines, accented Latin, combining
    /// marks, Cyrillic, Arabic, Devanagari, CJK, Hangul, emoji (with ZWJ and variation
    /// selectors) and arbitrary scalars from the whole Unicode range. U+2581 ("▁") is left
    /// out unless `allowSentencePieceSpace`, because it decodes as a space.
    static func make(pieces: Int, using rng: inout SeededGenerator, allowSentencePieceSpace: Bool = false) -> String {
        var scalars = String.UnicodeScalarView()
        func add(_ value: UInt32) {
            guard let scalar = Unicode.Scalar(value) else { return }
            if value == 0x2581 && !allowSentencePieceSpace { return }
            scalars.append(scalar)
        }
        func addRandom(in range: ClosedRange<UInt32>, count: Int) {
            for _ in 0..<count { add(UInt32.random(in: range, using: &rng)) }
        }
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".unicodeScalars)
        let punctuation = Array("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".unicodeScalars)
        let whitespace: [UInt32] = [0x20, 0x20, 0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0xA0, 0x3000]
        for _ in 0..<pieces {
            let length = Int.random(in: 1...6, using: &rng)
            switch Int.random(in: 0..<15, using: &rng) {
            case 0, 1:
                for _ in 0..<length { scalars.append(letters.randomElement(using: &rng)!) }
            case 2:
                addRandom(in: 0x30...0x39, count: length)
            case 3:
                for _ in 0..<length { scalars.append(punctuation.randomElement(using: &rng)!) }
            case 4, 5:
                for _ in 0..<length { add(whitespace.randomElement(using: &rng)!) }
            case 6:
                addRandom(in: 0xC0...0x17F, count: length)
            case 7:
                scalars.append(letters.randomElement(using: &rng)!)
                addRandom(in: 0x300...0x36F, count: Int.random(in: 1...3, using: &rng))
            case 8:
                addRandom(in: 0x400...0x4FF, count: length)
            case 9:
                addRandom(in: 0x600...0x6FF, count: length)
                addRandom(in: 0x900...0x97F, count: length)
            case 10:
                addRandom(in: 0x4E00...0x9FFF, count: length)
            case 11:
                addRandom(in: 0xAC00...0xD7A3, count: length)
            case 12:
                for i in 0..<length {
                    if i > 0 && Bool.random(using: &rng) { add(0x200D) }
                    add(UInt32.random(in: 0x1F300...0x1FAFF, using: &rng))
                    if Bool.random(using: &rng) { add(0xFE0F) }
                }
            case 13:
                // Anything at all: controls, private use, unassigned, supplementary planes.
                for _ in 0..<length {
                    var value: UInt32
                    repeat { value = UInt32.random(in: 0...0x10FFFF, using: &rng) } while (0xD800...0xDFFF).contains(value)
                    add(value)
                }
            default:
                scalars.append(" ")
                for _ in 0..<length { scalars.append(letters.randomElement(using: &rng)!) }
            }
        }
        return String(scalars)
    }
}
