/// Cuts generated text at the first stop string, holding back text that could still
/// become one.
///
/// Feed each token's text to ``append(_:)``; it returns the text that is safe to show:
/// everything except a tail that is the beginning of some stop string. When a stop string
/// appears, the text before it is released, the stop string and anything after it are
/// dropped, and ``isStopped`` becomes true. At the end of generation ``flush()`` releases
/// the held-back tail.
///
/// Matching works on UTF-8 bytes. Because both the text and the stop strings are valid
/// UTF-8, a match always starts on a character boundary, and so does every cut.
public struct StopStringFilter: Sendable {
    private let stops: [[UInt8]]
    private let longestStop: Int
    /// Text received but not yet released.
    private var pending: [UInt8] = []
    /// Whether a stop string has been seen; later input is ignored.
    public private(set) var isStopped = false

    /// - Parameter stopStrings: strings that end generation; empty strings are ignored.
    public init(stopStrings: [String]) {
        stops = stopStrings.filter { !$0.isEmpty }.map { Array($0.utf8) }
        longestStop = stops.map(\.count).max() ?? 0
    }

    /// Adds generated text; returns the text now safe to release (possibly empty).
    public mutating func append(_ text: String) -> String {
        if isStopped { return "" }
        pending.append(contentsOf: text.utf8)
        if stops.isEmpty { return takePending(count: pending.count) }

        if let cut = earliestStopOffset() {
            isStopped = true
            let released = takePending(count: cut)
            pending.removeAll()
            return released
        }
        return takePending(count: pending.count - heldBackCount())
    }

    /// Releases whatever is held back (call when generation ends without a stop string).
    public mutating func flush() -> String {
        if isStopped { return "" }
        return takePending(count: pending.count)
    }

    // MARK: - Matching

    private mutating func takePending(count: Int) -> String {
        guard count > 0 else { return "" }
        let text = String(decoding: pending[0 ..< count], as: UTF8.self)
        pending.removeFirst(count)
        return text
    }

    /// Offset in `pending` of the earliest complete stop string.
    private func earliestStopOffset() -> Int? {
        var best: Int?
        for stop in stops where stop.count <= pending.count {
            var start = 0
            let lastStart = pending.count - stop.count
            while start <= lastStart, best.map({ start < $0 }) ?? true {
                if pending[start] == stop[0], pending[start ..< start + stop.count].elementsEqual(stop) {
                    best = start
                    break
                }
                start += 1
            }
        }
        return best
    }

    /// Length of the longest tail of `pending` that is a proper prefix of some stop string.
    private func heldBackCount() -> Int {
        let limit = min(pending.count, longestStop - 1)
        var length = limit
        while length > 0 {
            let tail = pending[(pending.count - length)...]
            for stop in stops where stop.count > length {
                if stop[0 ..< length].elementsEqual(tail) { return length }
            }
            length -= 1
        }
        return 0
    }
}
