import LlamaServer
import Testing

@Suite("StopStringFilter")
struct StopStringFilterTests {
    /// The earliest complete occurrence of any stop string in `text`, by plain search.
    static func earliestStop(_ text: String, stops: [String]) -> Int? {
        let bytes = Array(text.utf8)
        var earliest: Int?
        for stop in stops {
            let pattern = Array(stop.utf8)
            guard !pattern.isEmpty, pattern.count <= bytes.count else { continue }
            for start in 0 ... (bytes.count - pattern.count) where Array(bytes[start ..< start + pattern.count]) == pattern {
                earliest = min(earliest ?? start, start)
                break
            }
        }
        return earliest
    }

    /// What generation should return: after each token, if the text so far holds a stop
    /// string, the text before its earliest occurrence; otherwise everything.
    static func reference(tokens: [String], stops: [String]) -> (text: String, stopped: Bool) {
        var text = ""
        for token in tokens {
            text += token
            if let cut = earliestStop(text, stops: stops) {
                return (String(decoding: Array(text.utf8)[..<cut], as: UTF8.self), true)
            }
        }
        return (text, false)
    }

    @Test("random texts, stop strings and token splits agree with a plain search after each token")
    func randomAgainstReference() {
        var generator = SplitMix64(seed: 0x5EED)
        let alphabet: [String] = ["a", "b", "c", " ", "é", "😀"]
        for _ in 0 ..< 3000 {
            let length = Int(generator.next() % 24)
            let pieces = (0 ..< length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            let stopCount = Int(generator.next() % 3)
            let stops = (0 ..< stopCount).map { _ in
                (0 ..< 1 + Int(generator.next() % 3)).map { _ in alphabet[Int(generator.next() % 4)] }.joined()
            }
            // Group pieces into tokens of 1-3 pieces.
            var tokens: [String] = []
            var index = 0
            while index < pieces.count {
                let size = 1 + Int(generator.next() % 3)
                tokens.append(pieces[index ..< min(index + size, pieces.count)].joined())
                index += size
            }
            let expected = Self.reference(tokens: tokens, stops: stops)
            var filter = StopStringFilter(stopStrings: stops)
            var released = ""
            for token in tokens {
                released += filter.append(token)
                // Released text is final: it must be the start of the expected result.
                #expect(expected.text.utf8.starts(with: released.utf8),
                        "released \(released.debugDescription) from \(tokens) with stops \(stops)")
                if filter.isStopped { break }
            }
            released += filter.flush()
            #expect(released == expected.text, "tokens \(tokens), stops \(stops)")
            #expect(filter.isStopped == expected.stopped, "tokens \(tokens), stops \(stops)")
        }
    }

    @Test("hand-worked cases")
    func handWorked() {
        var filter = StopStringFilter(stopStrings: ["\n\n", "User:"])
        #expect(filter.append("Hello") == "Hello")
        #expect(filter.append("\n") == "")
        #expect(filter.append("Us") == "\n")
        #expect(filter.append("er") == "")
        #expect(filter.append(": hi") == "")
        #expect(filter.isStopped)
        #expect(filter.append("more") == "")
        #expect(filter.flush() == "")

        var multibyte = StopStringFilter(stopStrings: ["é!"])
        #expect(multibyte.append("caf") == "caf")
        #expect(multibyte.append("é") == "")
        #expect(multibyte.append("é") == "é")
        #expect(multibyte.flush() == "é")

        var none = StopStringFilter(stopStrings: [])
        #expect(none.append("abc") == "abc")
        #expect(!none.isStopped)
    }
}

/// A small deterministic random generator for reproducible tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
