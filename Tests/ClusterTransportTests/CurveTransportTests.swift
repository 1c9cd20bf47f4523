import ClusterTransport
import Foundation
import Testing

/// CURVE between two workers' data sockets when the receiving stage learns the sender's key
/// only after the sender has connected (assignments reach workers in no fixed order).
@Suite("CURVE data path", .serialized, .timeLimit(.minutes(1)), .enabled(if: CurveKeyPair.isAvailable, "libzmq without CURVE"))
struct CurveTransportTests {
    final class Box<T>: @unchecked Sendable { var value: T; init(_ v: T) { value = v } }

    static func worker(_ name: String, _ keys: CurveKeyPair, coordinator: CurveKeyPair) throws -> ZMQWorkerTransport {
        try ZMQWorkerTransport(coordinator: "tcp://127.0.0.1:9", name: name, listen: "tcp://127.0.0.1:0", advertiseHost: nil,
                               security: TransportSecurity(keys: keys, coordinatorKey: coordinator.publicKey), maxDataBytes: 1 << 20)
    }

    @Test("a frame sent before the next stage allows the sender's key arrives once it does (the refused connection is made again)")
    func refusedThenAllowed() throws {
        let c = try CurveKeyPair.generate(), a = try CurveKeyPair.generate(), b = try CurveKeyPair.generate()
        let receiver = try Self.worker("a", a, coordinator: c)
        let sender = Box(try Self.worker("b", b, coordinator: c))
        try sender.value.connectOutput(PeerEndpoint(address: receiver.dataEndpoint, serverKey: a.publicKey))
        let payload: [UInt8] = Array("frame of epoch 1".utf8)
        let sent = Box<Error?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            do { try sender.value.sendData(payload) } catch { sent.value = error }
            done.signal()
        }.start()
        // The handshake is refused (the receiver allows only the coordinator so far)...
        let deadline = Date().addingTimeInterval(5)
        while receiver.zap?.refused.isEmpty ?? true, Date() < deadline { usleep(20_000) }
        #expect(receiver.zap?.refused.first?.key == b.publicKey)
        // ...then the receiver's assignment arrives and lets the sender in.
        receiver.allowDataPeers([c.publicKey, b.publicKey])
        var received: [UInt8]?
        let until = Date().addingTimeInterval(10)
        while received == nil, Date() < until {
            try receiver.poll(timeout: 0.1) { event in
                if case .data(let bytes) = event { received = Array(bytes) }
            }
        }
        done.wait()
        #expect(sent.value == nil, "\(String(describing: sent.value))")
        #expect(received == payload)
    }
}
