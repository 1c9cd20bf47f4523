import TestSupport
import LlamaTokenizer

/// A deliberately simple SentencePiece merger to check the fast one against: after the
/// same space prefix and "▁" escaping, it rescans every adjacent pair on each step and
/// merges the first pair with the highest-scoring token, until none forms a token.
/// Quadratic, so only for short texts. It has no user-defined-token splitting.
struct ReferenceTokenizer {
    let vocabulary: Vocabulary
    private let ids: [[UInt8]: Int32]

    init(vocabulary: Vocabulary) {
        self.vocabulary = vocabulary
        var ids: [[UInt8]: Int32] = [:]
        for (id, text) in vocabulary.tokens.enumerated() { ids[Array(text.utf8)] = Int32(id) }
        self.ids = ids
    }

    func encode(_ text: String, addBOS: Bool) -> [Int32] {
        var output: [Int32] = addBOS && vocabulary.addBOS ? [vocabulary.bosID] : []
        if text.isEmpty { return output }
        let space: [UInt8] = Array("▁".utf8)
        var bytes: [UInt8] = vocabulary.addSpacePrefix ? space : []
        for byte in text.utf8 { bytes += byte == 0x20 ? space : [byte] }

        // One symbol per UTF-8 character.
        var symbols: [[UInt8]] = []
        var i = 0
        while i < bytes.count {
            let length: Int
            switch bytes[i] {
            case 0xF0...: length = 4
            case 0xE0...: length = 3
            case 0xC0...: length = 2
            default: length = 1
            }
            let end = min(i + length, bytes.count)
            symbols.append(Array(bytes[i..<end]))
            i = end
        }

        while true {
            var best: (index: Int, score: Float)?
            for index in 0..<max(symbols.count - 1, 0) {
                guard let id = ids[symbols[index] + symbols[index + 1]] else { continue }
                let score = vocabulary.scores[Int(id)]
                if best == nil || score > best!.score { best = (index, score) }
            }
            guard let (index, _) = best else { break }
            symbols[index] += symbols[index + 1]
            symbols.remove(at: index + 1)
        }

        for symbol in symbols {
            if let id = ids[symbol] {
                output.append(id)
            } else {
                for byte in symbol {
                    let hex = String(byte, radix: 16, uppercase: true)
                    output.append(ids[Array("<0x\(hex.count == 1 ? "0" + hex : hex)>".utf8)]!)
                }
            }
        }
        return output
    }
}
