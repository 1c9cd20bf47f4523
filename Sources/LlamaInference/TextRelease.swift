import LlamaTokenizer

/// Turns one choice's generated tokens into the text a client may see, token by token:
/// never a partial UTF-8 character, never a stop string or what follows it, and never text
/// that could still turn out to be the start of a stop string.
///
/// It works on bytes, as tokens produce them. Each token's bytes are appended; the longest
/// releasable prefix is then handed out together with the tokens whose bytes it completes.
/// When a stop string appears, the text before it is released with the tokens that began
/// before it, and ``isStopped`` turns true: later tokens are ignored. ``finish()`` releases
/// what is held back when generation ends otherwise.
///
/// Stop strings are valid UTF-8, so a match always starts on a character boundary and every
/// cut leaves valid text on both sides.
public struct TextRelease: Sendable {
    private let stops: [[UInt8]]
    private let longestStop: Int
    /// Bytes not yet released.
    private var pending: [UInt8] = []
    /// Tokens not yet released, each with the offsets in `pending` where its bytes start and
    /// end (the start is negative when some of its bytes were released already).
    private var pendingTokens: [(token: TokenLogprob, start: Int, end: Int)] = []
    /// A stop string has been seen; later input is ignored.
    public private(set) var isStopped = false

    /// - Parameter stopStrings: strings that end generation; empty strings are ignored.
    public init(stopStrings: [String]) {
        stops = stopStrings.filter { !$0.isEmpty }.map { Array($0.utf8) }
        longestStop = stops.map(\.count).max() ?? 0
    }

    /// Adds a token and its bytes; returns the text now safe to release (possibly empty) and
    /// the tokens whose bytes it completes.
    public mutating func append(_ token: TokenLogprob) -> (text: String, tokens: [TokenLogprob]) {
        if isStopped { return ("", []) }
        pendingTokens.append((token, pending.count, pending.count + token.bytes.count))
        pending.append(contentsOf: token.bytes)
        if let cut = earliestStop() {
            isStopped = true
            // Tokens that contributed a byte before the cut are part of the answer.
            let released = pendingTokens.filter { $0.start < cut }.map(\.token)
            let text = String(decoding: pending[0..<cut], as: UTF8.self)
            pending.removeAll()
            pendingTokens.removeAll()
            return (text, released)
        }
        let hold = max(StreamingDecoder.incompleteSuffixLength(pending), stopPrefixLength())
        return take(pending.count - hold)
    }

    /// Releases everything held back (generation ended without a stop string); an
    /// unfinished UTF-8 character becomes U+FFFD, as ``LlamaTokenizer/decode(_:)`` shows it.
    public mutating func finish() -> (text: String, tokens: [TokenLogprob]) {
        if isStopped { return ("", []) }
        return take(pending.count)
    }

    /// Releases `count` bytes and the tokens they complete.
    private mutating func take(_ count: Int) -> (text: String, tokens: [TokenLogprob]) {
        guard count > 0 || pendingTokens.first.map({ $0.end == 0 }) == true else { return ("", []) }
        var done = 0
        while done < pendingTokens.count && pendingTokens[done].end <= count { done += 1 }
        let tokens = pendingTokens[0..<done].map(\.token)
        pendingTokens.removeFirst(done)
        for i in pendingTokens.indices {
            pendingTokens[i].start -= count
            pendingTokens[i].end -= count
        }
        let text = String(decoding: pending[0..<count], as: UTF8.self)
        pending.removeFirst(count)
        return (text, tokens)
    }

    /// Offset in `pending` of the earliest complete stop string.
    private func earliestStop() -> Int? {
        var best: Int?
        for stop in stops where stop.count <= pending.count {
            var start = 0
            let lastStart = pending.count - stop.count
            while start <= lastStart, best.map({ start < $0 }) ?? true {
                if pending[start] == stop[0], pending[start..<start + stop.count].elementsEqual(stop) {
                    best = start
                    break
                }
                start += 1
            }
        }
        return best
    }

    /// Length of the longest tail of `pending` that is a proper prefix of some stop string.
    private func stopPrefixLength() -> Int {
        var length = min(pending.count, longestStop - 1)
        while length > 0 {
            let tail = pending[(pending.count - length)...]
            for stop in stops where stop.count > length && stop[0..<length].elementsEqual(tail) { return length }
            length -= 1
        }
        return 0
    }
}
