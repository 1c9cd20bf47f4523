import GGUF
import TestSupport
import LlamaGrammar
import LlamaTokenizer

// MARK: - Vocabularies for the tests

/// The real Llama 2 vocabulary (32,000 tokens), loaded once.
enum RealVocabulary {
    static let path = Repo.vocab

    static let tokenizer: LlamaTokenizer = {
        do {
            return LlamaTokenizer(vocabulary: try Vocabulary(gguf: try GGUFFile(path: path)))
        } catch {
            fatalError("cannot load the Llama 2 vocabulary at \(path): \(error)")
        }
    }()

    static let grammarVocabulary = GrammarVocabulary(
        pieces: (0..<Int32(tokenizer.vocabularySize)).map { tokenizer.piece($0) },
        endOfText: tokenizer.eosID, isControl: { tokenizer.isControl($0) })

    static var eos: Int32 { tokenizer.eosID }

    /// The token of a byte-fallback piece `<0xNN>`.
    static func byteToken(_ byte: UInt8) -> Int32 {
        let hex = String(byte, radix: 16, uppercase: true)
        let name = "<0x" + (hex.count == 1 ? "0" : "") + hex + ">"
        return Int32(tokenizer.vocabulary.tokens.firstIndex(of: name)!)
    }
}

/// A vocabulary of the 256 single bytes (token `b` is byte `b`) and end-of-text (256).
enum ByteVocabulary {
    static let eos: Int32 = 256
    static let vocabulary = GrammarVocabulary(
        pieces: (0..<256).map { [UInt8($0)] } + [[]], endOfText: eos, isControl: { $0 == eos })
}

// MARK: - Helpers

/// Whether `grammar` accepts exactly `text` (fed byte by byte, then end-of-text).
func matches(_ grammar: Grammar, _ text: String) -> Bool {
    matches(grammar, Array(text.utf8))
}

func matches(_ grammar: Grammar, _ bytes: [UInt8]) -> Bool {
    var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
    for byte in bytes {
        guard (try? matcher.accept(Int32(byte))) != nil else { return false }
    }
    return matcher.canEnd
}

/// Whether `text` is a prefix of some sentence of `grammar`.
func isPrefix(_ grammar: Grammar, _ text: String) -> Bool {
    var matcher = GrammarMatcher(grammar: grammar, vocabulary: ByteVocabulary.vocabulary)
    return (try? matcher.accept(text: text)) != nil
}

