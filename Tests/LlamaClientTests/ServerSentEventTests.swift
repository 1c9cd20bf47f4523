import Foundation
import LlamaClient
import Testing

/// Feeds `pieces` one after another, then ends the stream.
private func split(_ pieces: [[UInt8]], lineLimit: Int = ServerSentEventSplitter.defaultMaximumLineBytes,
                   eventLimit: Int = ServerSentEventSplitter.defaultMaximumEventBytes,
                   finish: Bool = true) throws -> [ServerSentEventSplitter.Event]
{
    var splitter = ServerSentEventSplitter(maximumLineBytes: lineLimit, maximumEventBytes: eventLimit)
    var events: [ServerSentEventSplitter.Event] = []
    for piece in pieces { events += try splitter.feed(piece) }
    if finish { events += try splitter.finish() }
    return events
}

private func split(_ text: String, eventLimit: Int = ServerSentEventSplitter.defaultMaximumEventBytes,
                   finish: Bool = true) throws -> [ServerSentEventSplitter.Event]
{
    try split([Array(text.utf8)], eventLimit: eventLimit, finish: finish)
}

private func isMalformed(_ error: any Error, mentioning word: String) -> Bool {
    guard case let LlamaClientError.malformedResponse(message) = error else { return false }
    return message.contains(word)
}

@Suite("The server-sent events splitter")
struct ServerSentEventTests {
    /// A stream as the endpoint sends it: keep-alive comments, events, [DONE].
    static let stream = ": keep-alive\n\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: {\"é\":\"ü\"}\n\ndata: [DONE]\n\n"
    static let expected: [ServerSentEventSplitter.Event] = [.data(#"{"a":1}"#), .data(#"{"é":"ü"}"#), .done]

    @Test("a whole stream: data events in order, comments dropped, [DONE] last")
    func wholeStream() throws {
        #expect(try split(Self.stream) == Self.expected)
    }

    @Test("events split across pieces at every byte, and one byte at a time, come out the same")
    func splitPieces() throws {
        let bytes = Array(Self.stream.utf8)
        for cut in 0 ... bytes.count {
            #expect(try split([Array(bytes[..<cut]), Array(bytes[cut...])]) == Self.expected, "cut at \(cut)")
        }
        #expect(try split(bytes.map { [$0] }) == Self.expected)
    }

    @Test("CR LF and lone CR end lines too, also when CR and LF arrive in different pieces")
    func lineEndings() throws {
        let crlf = Self.stream.replacingOccurrences(of: "\n", with: "\r\n")
        #expect(try split(crlf) == Self.expected)
        let bytes = Array(crlf.utf8)
        for cut in 0 ... bytes.count {
            #expect(try split([Array(bytes[..<cut]), Array(bytes[cut...])]) == Self.expected, "cut at \(cut)")
        }
        #expect(try split("data: x\r\rdata: y\r\n\ndata: z\n\r\n") == [.data("x"), .data("y"), .data("z")])
        // "\r" then "\n" in the next piece is one line ending, not a blank line between two data lines.
        #expect(try split([Array("data: a\r".utf8), Array("\ndata: b\r\n\r\n".utf8)]) == [.data("a\nb")])
    }

    @Test("comments and other fields are ignored; data lines join with LF; one space after the colon is dropped")
    func fieldsAndComments() throws {
        #expect(try split(": only a comment\n\n:another\n\n") == [])
        #expect(try split("event: token\nid: 7\nretry: 10\ndata: a\n: in the middle\ndata:b\ndata:  c\n\n")
            == [.data("a\nb\n c")])
        #expect(try split("data\n\n") == [.data("")])
        #expect(try split("data: \n\n") == [.data("")])
        #expect(try split("datum: x\n\n") == [], "a field that is not data")
        #expect(try split("\n\n\ndata: x\n\n\n\n") == [.data("x")], "blank lines without data are no events")
    }

    @Test("[DONE] ends the stream: later bytes are ignored")
    func doneEndsTheStream() throws {
        var splitter = ServerSentEventSplitter()
        #expect(try splitter.feed(Array("data: 1\n\ndata: [DONE]\n\ndata: 2\n\n".utf8)) == [.data("1"), .done])
        #expect(splitter.isDone)
        #expect(try splitter.feed(Array("data: 3\n\n".utf8)) == [])
        #expect(try splitter.finish() == [])
        // Only a whole event of [DONE] counts.
        #expect(try split("data: [DONE] \n\ndata: [DONE]\ndata: x\n\n") == [.data("[DONE] "), .data("[DONE]\nx")])
    }

    @Test("a stream that ends before [DONE]: the last line and event still count, and the splitter is not done")
    func endsBeforeDone() throws {
        var splitter = ServerSentEventSplitter()
        #expect(try splitter.feed(Array("data: 1\n\ndata: 2".utf8)) == [.data("1")])
        #expect(try splitter.finish() == [.data("2")])
        #expect(!splitter.isDone)
        #expect(try split("data: a\ndata: b\n") == [.data("a\nb")])
        #expect(try split("data: [DONE]") == [.done], "a last [DONE] without its blank line still ends the stream")
        #expect(try split("data: a\n\n: half a comm", finish: true) == [.data("a")])
        #expect(try split("data: a\n\ndata: b", finish: false) == [.data("a")], "nothing before the end of the stream")
    }

    @Test("a UTF-8 character split between pieces is decoded whole")
    func splitCharacter() throws {
        let bytes = Array("data: ü€\n\n".utf8)
        for cut in 6 ..< bytes.count - 2 {
            #expect(try split([Array(bytes[..<cut]), Array(bytes[cut...])]) == [.data("ü€")], "cut at \(cut)")
        }
    }

    @Test("a line over the limit is an error, whether it comes whole or in pieces, comments too")
    func oversizedLine() throws {
        #expect(try split([Array(("data: " + String(repeating: "x", count: 10)).utf8) + [0x0A, 0x0A]], lineLimit: 16)
            == [.data("xxxxxxxxxx")], "a line of exactly the limit")
        #expect {
            _ = try split([Array(("data: " + String(repeating: "x", count: 11) + "\n\n").utf8)], lineLimit: 16)
        } throws: { isMalformed($0, mentioning: "longer than 16 bytes") }
        #expect {
            _ = try split(Array(repeating: Array("xxxx".utf8), count: 5), lineLimit: 16, finish: false)
        } throws: { isMalformed($0, mentioning: "longer than 16 bytes") }
        #expect {
            _ = try split([Array((":" + String(repeating: "c", count: 40)).utf8)], lineLimit: 16, finish: false)
        } throws: { isMalformed($0, mentioning: "longer than 16 bytes") }
        // An endless line of a hostile server: the buffer never grows past the limit.
        var splitter = ServerSentEventSplitter(maximumLineBytes: 1 << 16)
        let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        var fed = 0
        #expect {
            while fed < 1 << 20 {
                _ = try splitter.feed(piece)
                fed += piece.count
            }
        } throws: { isMalformed($0, mentioning: "longer than") }
        #expect(fed <= 1 << 16)
    }

    @Test("an event over the limit is an error even when each of its lines is short")
    func oversizedEvent() throws {
        #expect(try split("data: 12345\ndata: 6789\n\n", eventLimit: 10) == [.data("12345\n6789")])
        #expect {
            _ = try split("data: 12345\ndata: 67890\n\n", eventLimit: 10)
        } throws: { isMalformed($0, mentioning: "larger than 10 bytes") }
        #expect {
            _ = try split(String(repeating: "data: x\n", count: 100), eventLimit: 64, finish: false)
        } throws: { isMalformed($0, mentioning: "larger than 64 bytes") }
        // The limit is per event: many small events are fine.
        #expect(try split(String(repeating: "data: 12345\n\n", count: 100), eventLimit: 10).count == 100)
    }
}
