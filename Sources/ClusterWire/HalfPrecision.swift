import CClusterWire
import CLlamaKernels

/// Which implementation of a routine with a hardware-accelerated variant to run.
public enum RoutineImplementation: Sendable {
    /// The fastest one the CPU supports.
    case automatic
    /// The portable integer-arithmetic one (for cross-checking the accelerated one).
    case portable
}

// MARK: - Half precision

/// Bulk conversion between `Float` and IEEE binary16 bit patterns (round to nearest even):
/// the kernels' converter (vectorized on AVX2 and AVX-512 machines), so the wire and the KV
/// cache round alike.
public enum HalfPrecision {
    /// Whether ``RoutineImplementation/automatic`` uses vector instructions.
    public static var isHardwareAccelerated: Bool { lk_isa_max_level() > 0 }

    /// Runs `body` with the kernels' portable level selected on this thread.
    private static func portably(_ body: () -> Void) {
        let level = lk_isa_level()
        lk_force_isa(0)
        body()
        lk_force_isa(level)
    }

    /// Converts `source` to half-precision bit patterns; the buffers must have equal counts.
    public static func encode(
        _ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<UInt16>,
        using implementation: RoutineImplementation = .automatic
    ) {
        precondition(source.count == destination.count, "half-precision conversion needs equal counts")
        guard let input = source.baseAddress, let output = destination.baseAddress else { return }
        switch implementation {
        case .automatic: lk_f32_to_f16(input, output, Int64(source.count))
        case .portable: portably { lk_f32_to_f16(input, output, Int64(source.count)) }
        }
    }

    /// Converts half-precision bit patterns to floats (exactly); the buffers must have equal counts.
    public static func decode(
        _ source: UnsafeBufferPointer<UInt16>, into destination: UnsafeMutableBufferPointer<Float>,
        using implementation: RoutineImplementation = .automatic
    ) {
        precondition(source.count == destination.count, "half-precision conversion needs equal counts")
        guard let input = source.baseAddress, let output = destination.baseAddress else { return }
        switch implementation {
        case .automatic: lk_f16_to_f32(input, output, Int64(source.count))
        case .portable: portably { lk_f16_to_f32(input, output, Int64(source.count)) }
        }
    }
}

// MARK: - CRC-32C

/// CRC-32C (Castagnoli), the checksum of ``TensorChunk`` data; uses SSE4.2 when available.
public enum CRC32C {
    /// Whether ``RoutineImplementation/automatic`` uses the SSE4.2 `crc32` instruction.
    public static var isHardwareAccelerated: Bool { lcw_crc32c_hardware_available() != 0 }

    /// The checksum of `bytes`; pass a previous result as `continuing` to extend it.
    public static func checksum(
        _ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0,
        using implementation: RoutineImplementation = .automatic
    ) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return previous }
        switch implementation {
        case .automatic: return lcw_crc32c(previous, base, bytes.count)
        case .portable: return lcw_crc32c_portable(previous, base, bytes.count)
        }
    }
}
