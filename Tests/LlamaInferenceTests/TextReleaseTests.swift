import LlamaInference
import TestSupport
import Testing

/// Feeds strings to a ``TextRelease`` as tokens (each string one token's bytes).
struct StringRelease {
    var release: TextRelease
    var count = 0
    init(stopStrings: [String]) { release = TextRelease(stopStrings: stopStrings) }
    var isStopped: Bool { release.isStopped }
    mutating func append(_ s: String) -> String {
        count += 1
        return release.append(TokenLogprob(token: Int32(count), bytes: Array(s.utf8), logprob: nil)).text
    }
    mutating func flush() -> String { release.finish().text }
}

@Suite("Text release: stop strings and UTF-8 holdback")
struct TextReleaseTests {
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
        var generator = SeededGenerator(seed: 0x5EED)
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
            var filter = StringRelease(stopStrings: stops)
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
        var filter = StringRelease(stopStrings: ["\n\n", "User:"])
        #expect(filter.append("Hello") == "Hello")
        #expect(filter.append("\n") == "")
        #expect(filter.append("Us") == "\n")
        #expect(filter.append("er") == "")
        #expect(filter.append(": hi") == "")
        #expect(filter.isStopped)
        #expect(filter.append("more") == "")
        #expect(filter.flush() == "")

        var multibyte = StringRelease(stopStrings: ["é!"])
        #expect(multibyte.append("caf") == "caf")
        #expect(multibyte.append("é") == "")
        #expect(multibyte.append("é") == "é")
        #expect(multibyte.flush() == "é")

        var none = StringRelease(stopStrings: [])
        #expect(none.append("abc") == "abc")
        #expect(!none.isStopped)
    }

    @Test("each released token comes with its text; a stop string's tokens are dropped")
    func tokenAttribution() {
        var r = TextRelease(stopStrings: ["END"])
        func tok(_ id: Int32, _ s: String) -> TokenLogprob { TokenLogprob(token: id, bytes: Array(s.utf8), logprob: nil) }
        var out = r.append(tok(1, "Hello"))
        #expect(out.text == "Hello" && out.tokens.map(\.token) == [1])
        out = r.append(tok(2, " E"))        // " E" could start "END": " " goes out, "E" waits
        #expect(out.text == " " && out.tokens.isEmpty)
        out = r.append(tok(3, "x"))         // not END after all: the rest and token 2, 3 go out
        #expect(out.text == "Ex" && out.tokens.map(\.token) == [2, 3])
        out = r.append(tok(4, " EN"))
        #expect(out.text == " " && out.tokens.isEmpty)
        out = r.append(tok(5, "D and more"))   // token 4 began before the stop string: it counts
        #expect(out.text.isEmpty && out.tokens.map(\.token) == [4])
        #expect(r.isStopped)
        // A character split over byte tokens is released whole, with both tokens.
        var u = TextRelease(stopStrings: [])
        let e = Array("é".utf8)
        out = u.append(TokenLogprob(token: 7, bytes: [e[0]], logprob: nil))
        #expect(out.text.isEmpty && out.tokens.isEmpty)
        out = u.append(TokenLogprob(token: 8, bytes: [e[1]], logprob: nil))
        #expect(out.text == "é" && out.tokens.map(\.token) == [7, 8])
        // An unfinished character at the end shows as U+FFFD, as decode does.
        _ = u.append(TokenLogprob(token: 9, bytes: [e[0]], logprob: nil))
        #expect(u.finish().text == "\u{FFFD}")
    }
}
