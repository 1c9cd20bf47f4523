import Foundation

extension LayerSlice {
    /// Seconds this slice takes per token: decoding one token after a history of `history`
    /// positions (the best of eight steps), and in a prompt batch of `batch` tokens from an
    /// empty cache (the best of three). Uses sequence 0 and leaves its cache empty.
    public func timePerToken(history: Int = 256, batch: Int = 64) throws -> (decode: Double, prefill: Double) {
        let dim = config.dim
        var hidden = [Float](repeating: 0.1, count: batch * dim)
        func run(_ n: Int, at position: Int) throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            try hidden.withUnsafeMutableBufferPointer { try forward(hidden: $0.baseAddress!, count: n, sequence: 0, startPosition: position) }
            return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        }
        // Fill a history, then time decode steps at its end.
        var position = 0
        while position < history {
            _ = try run(batch, at: position)
            position += batch
            for i in hidden.indices { hidden[i] = 0.1 }
        }
        var decode = Double.infinity
        for _ in 0..<8 {
            decode = min(decode, try run(1, at: position))
            position += 1
        }
        var prefill = Double.infinity
        for _ in 0..<3 {
            release(sequence: 0)
            prefill = min(prefill, try run(batch, at: 0) / Double(batch))
        }
        release(sequence: 0)
        return (decode, prefill)
    }
}
