import ClusterWire
import LlamaInference
import LlamaModel

/// The coordinator's end of the data pipeline: a batch of tokens becomes an embedded,
/// encoded activation frame for the first stage; a frame back from the last stage becomes
/// logits rows through the final norm and the output head. All buffers are reused.
final class ClusterPipeline {
    let head: LlamaHead
    let config: LlamaConfig
    let dtype: ActivationDType
    private let codec = ActivationCodec()
    private var frame = ActivationFrame()
    private var returned = ActivationFrame()
    private var encoded: [UInt8] = []
    private(set) var logits: [Float] = []

    init(head: LlamaHead, config: LlamaConfig, dtype: ActivationDType) {
        self.head = head
        self.config = config
        self.dtype = dtype
    }

    /// The messages that carry `batch` (its cache copies, then its frame), stamped with
    /// `stepID` (the epoch in its top bits).
    func encode(_ batch: TokenBatch, stepID: UInt64, send: ([UInt8]) throws -> Void) throws {
        for c in batch.copies {
            try send(WireMessage.sequenceCopy(SequenceCopy(source: c.source, destination: c.destination, count: UInt32(c.count))).encode())
        }
        let n = batch.tokenCount, dim = config.dim
        frame.stepID = stepID
        frame.width = dim
        frame.dtype = dtype
        frame.sequenceIDs = batch.sequenceIDs
        frame.positions = batch.positions
        frame.needLogits = batch.needLogits
        frame.values.removeAll(keepingCapacity: true)
        frame.values.append(contentsOf: repeatElement(0, count: n * dim))
        try batch.tokens.withUnsafeBufferPointer { t in
            try frame.values.withUnsafeMutableBufferPointer { try head.embed(t, into: $0.baseAddress!) }
        }
        codec.encode(frame, into: &encoded)
        try send(encoded)
    }

    /// What came back on the data return.
    enum Returned {
        /// The logits rows of frame `stepID` are in ``logits`` (`rows` of them).
        case frame(stepID: UInt64, rows: Int)
        /// A pipeline message that went through every stage (a release or copy).
        case message
    }

    /// Decodes a returned frame and computes the logits of its rows, checking that it has
    /// as many rows as the frame sent (`expectedRows(stepID)`; nil: not a frame in flight).
    func decode(_ bytes: UnsafeRawBufferPointer, expectedRows: (UInt64) -> Int?) throws -> Returned? {
        var back = ActivationFrame()
        swap(&back, &returned)
        defer { swap(&back, &returned) }
        guard case .activation = try codec.decode(bytes, into: &back) else { return .message }
        guard let expected = expectedRows(back.stepID) else { return nil }
        guard back.width == config.dim else {
            throw WireError.invalidValue(field: "activation.width", reason: "\(back.width), the model's width is \(config.dim)")
        }
        // Rows with logits wanted, in frame order; the last stage has dropped the others.
        var wanted: [Int] = []
        if back.needLogits.count == back.tokenCount {
            for i in 0..<back.tokenCount where back.needLogits[i] { wanted.append(i) }
        }
        guard wanted.count == expected else {
            throw WireError.countMismatch(field: "activation.need_logits", count: wanted.count, expected: expected)
        }
        let n = wanted.count, dim = config.dim, vocab = config.vocabSize
        for (k, i) in wanted.enumerated() where k != i {
            for j in 0..<dim { back.values[k * dim + j] = back.values[i * dim + j] }
        }
        if logits.count < n * vocab { logits = [Float](repeating: 0, count: n * vocab) }
        if n > 0 {
            back.values.withUnsafeBufferPointer { h in
                logits.withUnsafeMutableBufferPointer { head.logits(hidden: h.baseAddress!, count: n, into: $0.baseAddress!) }
            }
        }
        return .frame(stepID: back.stepID, rows: n)
    }
}
