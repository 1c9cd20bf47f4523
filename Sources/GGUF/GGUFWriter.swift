#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a GGUF v3 file: metadata in insertion order, then tensors whose bytes are
/// produced on demand, one tensor at a time, so files larger than memory can be written.
public final class GGUFWriter {
    public typealias Fill = (UnsafeMutableRawBufferPointer) throws -> Void

    private struct PendingTensor {
        let name: String
        let type: GGMLType
        let shape: [Int]
        let byteCount: Int
        let fill: Fill
    }

    public let alignment: Int
    public let version: UInt32
    private var keys: [String] = []
    private var values: [String: GGUFValue] = [:]
    private var tensors: [PendingTensor] = []

    /// - Parameters:
    ///   - alignment: data alignment; written as `general.alignment` when not 32.
    ///   - version: 2 or 3 (identical layout for little-endian files).
    public init(alignment: Int = GGUFFile.defaultAlignment, version: UInt32 = 3) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        precondition(version == 2 || version == 3, "only GGUF v2 and v3 are written")
        self.alignment = alignment
        self.version = version
        if alignment != GGUFFile.defaultAlignment { set("general.alignment", .uint32(UInt32(alignment))) }
    }

    /// Sets a metadata value (replacing an earlier one under the same key).
    public func set(_ key: String, _ value: GGUFValue) {
        if values[key] == nil { keys.append(key) }
        values[key] = value
    }

    /// Adds a tensor; `fill` is called once, during `write`, with a buffer of exactly its byte size.
    /// `shape` is in GGML order (innermost dimension first).
    public func addTensor(name: String, type: GGMLType, shape: [Int], fill: @escaping Fill) {
        precondition(!shape.isEmpty && shape.count <= 4 && shape.allSatisfy { $0 > 0 }, "bad shape for \(name)")
        precondition(shape[0] % type.blockSize == 0, "\(name): row not a multiple of the \(type) block")
        tensors.append(PendingTensor(name: name, type: type, shape: shape,
                                     byteCount: type.byteCount(elements: shape.reduce(1, *)), fill: fill))
    }

    /// Writes the file to a temporary name beside `path` and renames it into place when complete.
    /// `progress` is called after each tensor with (tensors written, tensor count).
    public func write(to path: String, progress: ((Int, Int) -> Void)? = nil) throws {
        let tmp = path + ".partial"
        guard let fp = fopen(tmp, "wb") else {
            throw GGUFError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        var closed = false
        defer { if !closed { fclose(fp); unlink(tmp) } }

        var header: [UInt8] = []
        header.appendLE(GGUFFile.magic)
        header.appendLE(version)
        header.appendLE(UInt64(tensors.count))
        header.appendLE(UInt64(keys.count))
        for key in keys {
            header.appendString(key)
            let value = values[key]!
            header.appendLE(value.type.rawValue)
            header.appendValue(value)
        }
        var offset = 0
        for t in tensors {
            header.appendString(t.name)
            header.appendLE(UInt32(t.shape.count))
            for d in t.shape { header.appendLE(UInt64(d)) }
            header.appendLE(t.type.rawValue)
            header.appendLE(UInt64(offset))
            offset += (t.byteCount + alignment - 1) / alignment * alignment
        }
        header.append(contentsOf: [UInt8](repeating: 0, count: (alignment - header.count % alignment) % alignment))
        try put(fp, header, tmp)

        for (i, t) in tensors.enumerated() {
            let padded = (t.byteCount + alignment - 1) / alignment * alignment
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: padded, alignment: 64)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            try t.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<t.byteCount]))
            guard fwrite(buffer.baseAddress, 1, padded, fp) == padded else {
                throw GGUFError.writeFailed(path: tmp, reason: String(cString: strerror(errno)))
            }
            progress?(i + 1, tensors.count)
        }
        closed = true
        guard fclose(fp) == 0 else {
            unlink(tmp)
            throw GGUFError.writeFailed(path: tmp, reason: String(cString: strerror(errno)))
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw GGUFError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
    }

    private func put(_ fp: UnsafeMutablePointer<FILE>, _ bytes: [UInt8], _ path: String) throws {
        guard bytes.withUnsafeBytes({ fwrite($0.baseAddress, 1, $0.count, fp) }) == bytes.count else {
            throw GGUFError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
    }
}

// MARK: - Encoding helpers

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    mutating func appendString(_ s: String) {
        let utf8 = Array(s.utf8)
        appendLE(UInt64(utf8.count))
        append(contentsOf: utf8)
    }

    mutating func appendValue(_ value: GGUFValue) {
        switch value {
        case .uint8(let v): appendLE(v)
        case .int8(let v): appendLE(v)
        case .uint16(let v): appendLE(v)
        case .int16(let v): appendLE(v)
        case .uint32(let v): appendLE(v)
        case .int32(let v): appendLE(v)
        case .uint64(let v): appendLE(v)
        case .int64(let v): appendLE(v)
        case .float32(let v): appendLE(v.bitPattern)
        case .float64(let v): appendLE(v.bitPattern)
        case .bool(let v): append(v ? 1 : 0)
        case .string(let s): appendString(s)
        case .array(let type, let elements):
            appendLE(type.rawValue)
            appendLE(UInt64(elements.count))
            for e in elements {
                precondition(e.type == type, "GGUF arrays hold one element type")
                appendValue(e)
            }
        }
    }
}
