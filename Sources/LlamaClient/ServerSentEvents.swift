/// Splits a `text/event-stream` body into events, as the endpoint's streaming routes send them.
///
/// Feed it the body in whatever pieces the network delivers; it returns the events that those
/// bytes complete. The rules it follows (a subset of the server-sent events format):
/// - a line ends with LF, CR LF or a lone CR, also when the two bytes of CR LF arrive in
///   different pieces;
/// - `data:` lines (one space after the colon is dropped) accumulate, joined by LF, until a
///   blank line ends the event; an event without data lines is not reported;
/// - lines starting with `:` are comments (the server's keep-alives) and are ignored, as are
///   the other fields (`event:`, `id:`, `retry:`);
/// - an event whose data is `[DONE]` ends the stream: it is reported as ``Event/done`` and
///   every byte after it is ignored.
///
/// A line longer than ``maximumLineBytes`` or an event whose data grows past
/// ``maximumEventBytes`` is an error, so a hostile or broken server cannot make the client
/// buffer without bound.
public struct ServerSentEventSplitter: Sendable {
    /// What the stream delivered.
    public enum Event: Sendable, Equatable {
        /// The data of one event (its `data:` lines joined by LF).
        case data(String)
        /// The `[DONE]` event: the stream is over.
        case done
    }

    /// Default longest line: 1 MiB.
    public static let defaultMaximumLineBytes = 1 << 20
    /// Default largest event data: 4 MiB.
    public static let defaultMaximumEventBytes = 4 << 20

    /// Longest line accepted (without its line ending).
    public let maximumLineBytes: Int
    /// Largest event accepted (its data lines together).
    public let maximumEventBytes: Int

    /// Whether the `[DONE]` event has been seen.
    public private(set) var isDone = false

    /// Bytes of the line not yet ended.
    private var line: [UInt8] = []
    /// The last byte fed was a CR: an LF right after it belongs to the same line ending.
    private var afterCR = false
    /// Data lines of the event not yet ended.
    private var data: [UInt8] = []
    private var hasData = false

    public init(maximumLineBytes: Int = ServerSentEventSplitter.defaultMaximumLineBytes,
                maximumEventBytes: Int = ServerSentEventSplitter.defaultMaximumEventBytes)
    {
        self.maximumLineBytes = max(maximumLineBytes, 1)
        self.maximumEventBytes = max(maximumEventBytes, 1)
    }

    /// Takes the next piece of the body and returns the events it completes.
    /// - Throws: ``LlamaClientError/malformedResponse(_:)`` for a line or event over its limit.
    public mutating func feed<Bytes: Collection>(_ bytes: Bytes) throws -> [Event] where Bytes.Element == UInt8 {
        var events: [Event] = []
        guard !isDone else { return events }
        var lineStart = bytes.startIndex
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            if byte == 0x0A || byte == 0x0D {
                let skip = byte == 0x0A && afterCR && line.isEmpty && lineStart == index
                afterCR = byte == 0x0D
                if !skip {
                    try appendToLine(bytes[lineStart ..< index])
                    try endLine(into: &events)
                    if isDone { return events }
                }
                lineStart = bytes.index(after: index)
            } else {
                afterCR = false
            }
            index = bytes.index(after: index)
        }
        try appendToLine(bytes[lineStart ..< bytes.endIndex])
        return events
    }

    /// Ends the stream: a last line without its line ending and a last event without its blank
    /// line still count. Returns the events that completes.
    public mutating func finish() throws -> [Event] {
        var events: [Event] = []
        guard !isDone else { return events }
        if !line.isEmpty { try endLine(into: &events) }
        if !isDone { try endLine(into: &events) }  // the blank line the stream did not send
        return events
    }

    private mutating func appendToLine(_ part: some Collection<UInt8>) throws {
        guard !part.isEmpty else { return }
        guard line.count + part.count <= maximumLineBytes else {
            throw LlamaClientError.malformedResponse("a line of the event stream is longer than \(maximumLineBytes) bytes")
        }
        line.append(contentsOf: part)
    }

    private mutating func endLine(into events: inout [Event]) throws {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            guard hasData else { return }
            let text = String(decoding: data, as: UTF8.self)
            data.removeAll(keepingCapacity: true)
            hasData = false
            if text == "[DONE]" {
                isDone = true
                events.append(.done)
            } else {
                events.append(.data(text))
            }
            return
        }
        if line[0] == UInt8(ascii: ":") { return }  // a comment
        let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
        guard line[..<colon].elementsEqual("data".utf8) else { return }  // another field
        var valueStart = colon == line.endIndex ? colon : colon + 1
        if valueStart < line.endIndex, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
        let value = line[valueStart...]
        let added = value.count + (hasData ? 1 : 0)
        guard data.count + added <= maximumEventBytes else {
            throw LlamaClientError.malformedResponse("an event of the stream is larger than \(maximumEventBytes) bytes")
        }
        if hasData { data.append(0x0A) }
        data.append(contentsOf: value)
        hasData = true
    }
}
