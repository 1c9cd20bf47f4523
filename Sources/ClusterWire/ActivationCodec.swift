import CClusterWire

/// Encodes and decodes frames with reusable memory, for the per-token data pipeline.
///
/// Decoding parses into an arena owned by the codec and writes activation frames into a
/// caller-owned ``ActivationFrame`` whose arrays are reused; encoding converts f16 payloads in
/// a scratch buffer owned by the codec and writes into a caller-owned byte array. Once the
/// buffers have grown to the largest frame seen, neither direction allocates (as long as the
/// caller's arrays are not shared with other values).
///
/// A codec is not thread-safe: use one per thread.
public final class ActivationCodec {
    /// What ``decode(_:into:)`` found in a frame.
    public enum Decoded: Equatable, Sendable {
        /// An activation frame, now held by the `frame` argument.
        case activation
        /// Any other message.
        case message(WireMessage)
    }

    private let arena: OpaquePointer
    private var scratch = ActivationEncodingScratch()

    /// - Parameter initialArenaBytes: initial size of the decoding arena; it grows to fit the
    ///   largest frame decoded.
    public init(initialArenaBytes: Int = 64 * 1024) {
        guard let arena = lcw_arena_create(max(0, initialArenaBytes)) else { fatalError("out of memory") }
        self.arena = arena
    }

    deinit {
        lcw_arena_destroy(arena)
    }

    /// How many allocations of the decoding arena have spilled to the system allocator since
    /// the codec was made; stays constant once the arena fits the frames decoded.
    public var arenaSpillCount: Int { lcw_arena_spill_count(arena) }

    // MARK: - Encoding

    /// Serializes `frame` into `output`, replacing its contents and reusing its storage.
    public func encode(_ frame: ActivationFrame, into output: inout [UInt8]) {
        withCActivationFrame(frame, scratch: &scratch) { cFrame in
            var envelope = LlamaCluster__Envelope()
            llama_cluster__envelope__init(&envelope)
            envelope.protocol_version = WireProtocol.version
            envelope.body_case = LLAMA_CLUSTER__ENVELOPE__BODY_ACTIVATION
            envelope.activation = cFrame
            packEnvelope(&envelope, into: &output)
        }
    }

    /// Serializes any message into `output`, replacing its contents and reusing its storage.
    public func encode(_ message: WireMessage, into output: inout [UInt8]) {
        message.encode(into: &output, scratch: &scratch)
    }

    // MARK: - Decoding

    /// Decodes and validates one frame. An activation frame is written into `frame` (reusing
    /// its arrays); any other message is returned.
    ///
    /// - Throws: ``WireError`` naming what is wrong with the frame; `frame` is then unchanged.
    public func decode(_ bytes: UnsafeRawBufferPointer, into frame: inout ActivationFrame) throws -> Decoded {
        defer { lcw_arena_reset(arena) }
        let envelope = try unpackEnvelope(bytes, allocator: lcw_arena_allocator(arena))
        if envelope.pointee.body_case == LLAMA_CLUSTER__ENVELOPE__BODY_ACTIVATION {
            try decodeActivationFrame(try present(envelope.pointee.activation, "activation"), into: &frame)
            return .activation
        }
        return .message(try decodeBody(of: envelope))
    }

    /// Decodes and validates one frame of any kind, parsing in the codec's arena.
    ///
    /// - Throws: ``WireError`` naming what is wrong with the frame.
    public func decode(_ bytes: UnsafeRawBufferPointer) throws -> WireMessage {
        defer { lcw_arena_reset(arena) }
        let envelope = try unpackEnvelope(bytes, allocator: lcw_arena_allocator(arena))
        return try decodeBody(of: envelope)
    }
}
