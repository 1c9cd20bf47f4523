import ClusterWire
import Foundation
import LlamaModel

/// The reusable buffers of the data path (decoding, the frame, encoding): a frame is
/// decoded, run and passed on without allocating once they have grown.
final class StageFrames {
    let codec = ActivationCodec()
    var frame = ActivationFrame()
    var encoded: [UInt8] = []
}

extension WorkerState {
    /// Most recent step ids remembered to drop duplicated frames.
    static let rememberedSteps = 256

    func handleData(_ bytes: UnsafeRawBufferPointer) {
        let decoded: ActivationCodec.Decoded
        do {
            decoded = try frames.codec.decode(bytes, into: &frames.frame)
        } catch {
            logger.error("rejected a data frame: \(error)")
            return
        }
        switch decoded {
        case .activation:
            process()
        case .message(let m):
            // Releases and copies travel through the pipeline in order with the frames, then on.
            switch m {
            case .sequenceRelease(let r):
                for id in r.sequenceIDs { slice?.release(sequence: id) }
                forward(m)
            case .sequenceCopy(let c):
                do {
                    try slice?.cache.copy(from: Int(c.source), to: Int(c.destination), count: Int(c.count))
                } catch {
                    logger.error("rejected a sequence copy: \(error)")
                }
                forward(m)
            default:
                logger.warning("ignoring unexpected \(m.kind) message on the data input")
            }
        }
    }

    private func process() {
        guard let slice else {
            logger.warning("dropping a frame: no layers assigned yet")
            return
        }
        let stepID = frames.frame.stepID
        guard UInt32(truncatingIfNeeded: stepID >> 40) == epoch else {
            logger.debug("dropping a frame of an earlier epoch")
            return
        }
        guard !recentSteps.contains(stepID) else {
            logger.warning("dropping a duplicated frame (step \(stepID & 0xFF_FFFF_FFFF))")
            return
        }
        guard frames.frame.width == slice.config.dim else {
            logger.error("rejected a frame of width \(frames.frame.width); the model's width is \(slice.config.dim)")
            return
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        // Work on a local frame: a stored property's parts cannot be borrowed separately.
        var f = ActivationFrame()
        swap(&f, &frames.frame)
        defer { swap(&f, &frames.frame) }
        do {
            let n = f.tokenCount
            try f.values.withUnsafeMutableBufferPointer { v in
                try f.sequenceIDs.withUnsafeBufferPointer { ids in
                    try f.positions.withUnsafeBufferPointer { pos in
                        try slice.forward(hidden: v.baseAddress!, count: n, sequenceIDs: ids, positions: pos)
                    }
                }
            }
        } catch {
            logger.error("rejected a frame: \(error)")
            return
        }
        recentSteps.append(stepID)
        if recentSteps.count > Self.rememberedSteps { recentSteps.removeFirst(recentSteps.count - Self.rememberedSteps) }
        shared.tokensProcessed.add(UInt64(f.tokenCount), ordering: .relaxed)
        if isLastStage, !f.needLogits.isEmpty, f.needLogits.contains(false) {
            f.retainTokensNeedingLogits()
        }
        f.dtype = assignment?.activationDType ?? .f32
        frames.codec.encode(f, into: &frames.encoded)
        shared.busyNanos.add(DispatchTime.now().uptimeNanoseconds - t0, ordering: .relaxed)
        do {
            try transport.sendData(frames.encoded)
        } catch {
            logger.error("cannot pass a frame on: \(error)")
        }
    }

    private func forward(_ message: WireMessage) {
        do { try transport.sendData(message.encode()) } catch { logger.error("cannot pass a message on: \(error)") }
    }
}

extension ActivationFrame {
    /// Drops the tokens whose `needLogits` flag is false (the last stage sends back only those).
    mutating func retainTokensNeedingLogits() {
        // A frame carries at least one token: with none wanted, the last one stands in (flag false).
        if !needLogits.contains(true) {
            let last = tokenCount - 1
            for j in 0..<width { values[j] = values[last * width + j] }
            sequenceIDs = [sequenceIDs[last]]
            positions = [positions[last]]
            needLogits = [false]
            values.removeLast(values.count - width)
            return
        }
        var w = 0
        for r in 0..<tokenCount where needLogits[r] {
            if w != r {
                for j in 0..<width { values[w * width + j] = values[r * width + j] }
                sequenceIDs[w] = sequenceIDs[r]
                positions[w] = positions[r]
            }
            needLogits[w] = true
            w += 1
        }
        sequenceIDs.removeLast(tokenCount - w)
        positions.removeLast(positions.count - w)
        needLogits.removeLast(needLogits.count - w)
        values.removeLast(values.count - w * width)
    }
}
