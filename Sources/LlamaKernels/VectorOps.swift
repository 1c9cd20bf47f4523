import CLlamaKernels
import GGUF

// MARK: - Encoding

/// Decodes `count` elements of `type` into floats.
public func dequantizeRow(_ type: GGMLType, _ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>, count: Int) {
    precondition(type.isSupported || type == .q8_K, "dequantizeRow: unsupported type \(type)")
    precondition(count % type.blockSize == 0, "dequantizeRow: \(count) is not a multiple of the \(type) block size")
    lk_dequantize_row(Int32(type.rawValue), source, destination, Int64(count))
}

/// Encodes `count` floats as `type`; `destination` needs `type.byteCount(elements: count)` bytes.
public func quantizeRow(_ type: GGMLType, _ source: UnsafePointer<Float>, _ destination: UnsafeMutableRawPointer, count: Int) {
    precondition(type.isSupported || type == .q8_K, "quantizeRow: unsupported type \(type)")
    precondition(count % type.blockSize == 0, "quantizeRow: \(count) is not a multiple of the \(type) block size")
    lk_quantize_row(Int32(type.rawValue), source, destination, Int64(count))
}

// MARK: - Vector helpers

/// Sum of `a[i] * b[i]`.
@inline(__always)
public func dotF32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    lk_dot_f32(a, b, Int64(count))
}

/// `y[i] += alpha * x[i]`.
@inline(__always)
public func axpyF32(count: Int, alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    lk_axpy_f32(Int64(count), alpha, x, y)
}

/// Causal attention over positions `0..<positions` of `keyValueHeads` key/value heads lying side
/// by side in each cached row, each shared by `group` query heads (see `lk_attention`): query head
/// `j` (at `queries + j * queryStride`) reads key/value head `j / group` and writes
/// `output + j * outputStride`, the softmax(`scale` * q·k)-weighted sum of its value rows.
/// `scores` is scratch for `keyValueHeads * group * positions` floats.
@inline(__always)
public func groupedAttention(
    queries: UnsafePointer<Float>, queryStride: Int, keyValueHeads: Int, group: Int,
    keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rowStride: Int, headDim: Int, positions: Int,
    scale: Float, scores: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, outputStride: Int
) {
    lk_attention(queries, Int64(queryStride), Int64(keyValueHeads), Int64(group), keys, values, Int64(rowStride),
                 Int64(headDim), Int64(positions), scale, scores, output, Int64(outputStride))
}

/// `groupedAttention` over keys and values stored as IEEE halves (see `lk_attention_f16`).
@inline(__always)
public func groupedAttention(
    queries: UnsafePointer<Float>, queryStride: Int, keyValueHeads: Int, group: Int,
    keys: UnsafePointer<UInt16>, values: UnsafePointer<UInt16>, rowStride: Int, headDim: Int, positions: Int,
    scale: Float, scores: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, outputStride: Int
) {
    lk_attention_f16(queries, Int64(queryStride), Int64(keyValueHeads), Int64(group), keys, values, Int64(rowStride),
                     Int64(headDim), Int64(positions), scale, scores, output, Int64(outputStride))
}

/// The SwiGLU gate in place: `gate[i] = silu(gate[i]) * up[i]` (see `lk_swiglu`).
@inline(__always)
public func swiglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
    lk_swiglu(gate, up, Int64(count))
}

/// Sum of `half(a[i]) * b[i]` for a vector stored as IEEE halves.
@inline(__always)
public func dotF16F32(_ a: UnsafePointer<UInt16>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    lk_dot_f16_f32(a, b, Int64(count))
}

/// `y[i] += alpha * half(x[i])` for a vector stored as IEEE halves.
@inline(__always)
public func axpyF16(count: Int, alpha: Float, _ x: UnsafePointer<UInt16>, _ y: UnsafeMutablePointer<Float>) {
    lk_axpy_f16(Int64(count), alpha, x, y)
}

/// Converts IEEE halves to floats.
@inline(__always)
public func convertF16ToF32(_ source: UnsafePointer<UInt16>, _ destination: UnsafeMutablePointer<Float>, count: Int) {
    lk_f16_to_f32(source, destination, Int64(count))
}

/// Converts floats to IEEE halves, rounding to nearest even.
@inline(__always)
public func convertF32ToF16(_ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<UInt16>, count: Int) {
    lk_f32_to_f16(source, destination, Int64(count))
}

// MARK: - Instruction set

/// The SIMD instruction-set level the kernels use.
public enum KernelISA: Int, Sendable, CaseIterable, CustomStringConvertible {
    case scalar = 0
    case avx2 = 1
    case avx512 = 2

    /// Level in use.
    public static var current: KernelISA { KernelISA(rawValue: Int(lk_isa_level())) ?? .scalar }

    /// The CPU features the kernels probe for, e.g. "sse4.2 avx avx2 fma f16c avx512f".
    public static var cpuFeatures: String { String(cString: lk_cpu_feature_names()) }

    /// Best level this CPU supports.
    public static var best: KernelISA { KernelISA(rawValue: Int(lk_isa_max_level())) ?? .scalar }

    /// Levels this CPU can run, lowest first.
    public static var available: [KernelISA] { allCases.filter { $0.rawValue <= best.rawValue } }

    /// Selects a level (clamped to what the CPU supports) for the calling thread only; other
    /// threads (a thread pool's included) keep the best level.
    public static func force(_ level: KernelISA) { lk_force_isa(Int32(level.rawValue)) }

    public var description: String {
        switch self {
        case .scalar: return "scalar"
        case .avx2: return "avx2"
        case .avx512: return "avx512"
        }
    }
}
