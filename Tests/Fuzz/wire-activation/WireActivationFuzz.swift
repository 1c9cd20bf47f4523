// libFuzzer harness: the data-path decoder, `ActivationCodec.decode(_:into:)`.
//
// One codec and one destination frame live for the whole run, as on a worker, so the arena
// and the reused arrays carry over from input to input. Any input may be rejected with a
// `WireError`; a rejected frame must leave the destination as it was, an accepted one must
// satisfy `ActivationFrame.validate()`, and the codec must agree with `WireMessage.decode`.

import FuzzDriver
import ClusterWire

nonisolated(unsafe) let codec = ActivationCodec(initialArenaBytes: 256)
nonisolated(unsafe) var frame = ActivationFrame()
nonisolated(unsafe) var output: [UInt8] = []

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let before = frame
    let decoded: ActivationCodec.Decoded
    do {
        decoded = try codec.decode(bytes, into: &frame)
    } catch {
        precondition(same(frame, before), "a rejected frame changed the destination")
        precondition((try? WireMessage.decode(bytes)) == nil, "the codec rejects a frame WireMessage accepts")
        return 0
    }
    guard let other = try? WireMessage.decode(bytes) else {
        preconditionFailure("the codec accepts a frame WireMessage rejects")
    }
    switch decoded {
    case .activation:
        do { try frame.validate() } catch { preconditionFailure("a decoded frame does not validate: \(error)") }
        guard case .activation = other else { preconditionFailure("WireMessage decodes another kind") }
        codec.encode(frame, into: &output)
        let copy = frame
        do {
            _ = try output.withUnsafeBytes { try codec.decode($0, into: &frame) }
        } catch {
            preconditionFailure("a decoded frame re-encodes into one that does not decode: \(error)")
        }
        precondition(frame.tokenCount == copy.tokenCount && frame.width == copy.width, "the frame changed shape")
    case .message(let message):
        precondition(message.kind == other.kind, "the codec and WireMessage decode different kinds")
    }
    return 0
}

/// Equal frames, values compared bit for bit (so NaN payloads compare equal to themselves).
func same(_ a: ActivationFrame, _ b: ActivationFrame) -> Bool {
    a.stepID == b.stepID && a.width == b.width && a.dtype == b.dtype && a.sequenceIDs == b.sequenceIDs
        && a.positions == b.positions && a.needLogits == b.needLogits
        && a.values.map(\.bitPattern) == b.values.map(\.bitPattern)
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_wire_activation_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
