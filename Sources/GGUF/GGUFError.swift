/// Why a GGUF file could not be read.
public enum GGUFError: Error, Equatable, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case badMagic(found: UInt32)
    case unsupportedVersion(UInt32)
    case truncated(what: String, offset: Int, fileSize: Int)
    case invalidString(offset: Int)
    case unknownValueType(key: String, raw: UInt32)
    case unknownTensorType(tensor: String, raw: UInt32)
    case unsupportedTensorType(tensor: String, type: GGMLType)
    case invalidTensorShape(tensor: String, reason: String)
    case tensorOutOfBounds(tensor: String, end: Int, fileSize: Int)
    case misalignedTensor(tensor: String, offset: Int, alignment: Int)
    case duplicate(what: String)
    case invalidAlignment(Int)
    case tooLarge(what: String, count: UInt64)
    case missingTensor(String)
    case missingKey(String)
    case badValue(key: String, reason: String)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case .cannotOpen(let p, let r): return "cannot open GGUF file \(p): \(r)"
        case .badMagic(let m):
            return "not a GGUF file: magic is 0x\(String(m, radix: 16)) instead of 0x46554747 (\"GGUF\")"
        case .unsupportedVersion(let v): return "unsupported GGUF version \(v) (this reader handles versions 1, 2 and 3)"
        case .truncated(let w, let o, let s): return "GGUF file is truncated: \(w) at byte \(o) runs past the end of the file (\(s) bytes)"
        case .invalidString(let o): return "GGUF string at byte \(o) is not valid UTF-8"
        case .unknownValueType(let k, let r): return "metadata key \(k.debugDescription) has unknown value type \(r)"
        case .unknownTensorType(let t, let r): return "tensor \(t.debugDescription) has unknown GGML type \(r)"
        case .unsupportedTensorType(let t, let ty): return "tensor \(t.debugDescription) has type \(ty), which this engine does not compute with (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)"
        case .invalidTensorShape(let t, let r): return "tensor \(t.debugDescription) has an invalid shape: \(r)"
        case .tensorOutOfBounds(let t, let e, let s): return "tensor \(t.debugDescription) ends at byte \(e), past the end of the file (\(s) bytes): the file is truncated or corrupt"
        case .misalignedTensor(let t, let o, let a): return "tensor \(t.debugDescription) has offset \(o), not a multiple of the alignment \(a)"
        case .duplicate(let w): return "duplicate \(w)"
        case .invalidAlignment(let a): return "general.alignment is \(a); it must be a positive power of two"
        case .tooLarge(let w, let c): return "\(w) count \(c) is implausibly large: the file is corrupt"
        case .missingTensor(let n): return "the model has no tensor named \(n.debugDescription)"
        case .missingKey(let k): return "the model has no metadata key \(k.debugDescription)"
        case .badValue(let k, let r): return "metadata key \(k.debugDescription): \(r)"
        case .writeFailed(let p, let r): return "cannot write GGUF file \(p): \(r)"
        }
    }
}
