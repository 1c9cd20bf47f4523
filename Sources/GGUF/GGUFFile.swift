#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One tensor's description from the file header.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in GGML order: `shape[0]` is the innermost (contiguous) dimension.
    public let shape: [Int]
    public let type: GGMLType
    /// Offset of the data from the start of the data section.
    public let offset: Int
    /// Size of the data in bytes.
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped GGUF file (versions 1, 2 and 3).
///
/// The header and metadata are parsed eagerly with bounds checks on every read; tensor
/// data stays in the mapping and is only touched when a caller reads it, so a process
/// that uses a few tensors of a large file only pages in those.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian
    public static let defaultAlignment = 32

    public let path: String
    public let version: UInt32
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the data section in the file.
    public let dataOffset: Int
    public let fileSize: Int

    private let base: UnsafeRawPointer
    private let tensorIndex: [String: Int]

    /// Maps and parses the file at `path`.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw GGUFError.cannotOpen(path: path, reason: "it is a directory") }
        let size = Int(st.st_size)
        guard size > 0 else { throw GGUFError.truncated(what: "header", offset: 0, fileSize: 0) }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw GGUFError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        // Weights are read in long sweeps: ask for 2 MiB pages (where transparent huge pages are
        // enabled for madvise) so that faults read whole 2 MiB folios and map them with one TLB
        // entry each. A hint only; failure changes nothing but speed.
        _ = madvise(mapped, size, MADV_HUGEPAGE)
        let base = UnsafeRawPointer(mapped)
        do {
            var r = Reader(base: base, size: size)
            let magic = try r.u32("magic")
            guard magic == Self.magic else { throw GGUFError.badMagic(found: magic) }
            let version = try r.u32("version")
            guard (1...3).contains(version) else { throw GGUFError.unsupportedVersion(version) }
            r.wideCounts = version >= 2
            let tensorCount = try r.count("tensor count", limit: 1 << 20)
            let kvCount = try r.count("metadata count", limit: 1 << 20)

            var keys: [String] = []
            var meta: [String: GGUFValue] = [:]
            for _ in 0..<kvCount {
                let key = try r.string("metadata key")
                let rawType = try r.u32("value type of \(key)")
                guard let type = GGUFValueType(rawValue: rawType) else {
                    throw GGUFError.unknownValueType(key: key, raw: rawType)
                }
                let value = try r.value(type, key: key, depth: 0)
                guard meta[key] == nil else { throw GGUFError.duplicate(what: "metadata key \(key.debugDescription)") }
                meta[key] = value
                keys.append(key)
            }

            var alignment = Self.defaultAlignment
            if let a = meta["general.alignment"] {
                guard let v = a.int, v > 0, v & (v - 1) == 0 else { throw GGUFError.invalidAlignment(a.int ?? -1) }
                alignment = v
            }

            var infos: [GGUFTensorInfo] = []
            var index: [String: Int] = [:]
            for _ in 0..<tensorCount {
                let name = try r.string("tensor name")
                let nDims = Int(try r.u32("dimension count of \(name)"))
                guard (1...4).contains(nDims) else {
                    throw GGUFError.invalidTensorShape(tensor: name, reason: "\(nDims) dimensions (1 to 4 allowed)")
                }
                var shape: [Int] = []
                for _ in 0..<nDims {
                    let d = r.wideCounts ? try r.u64("dimension of \(name)") : UInt64(try r.u32("dimension of \(name)"))
                    guard d > 0, d < (1 << 40) else {
                        throw GGUFError.invalidTensorShape(tensor: name, reason: "dimension \(d)")
                    }
                    shape.append(Int(d))
                }
                let rawType = try r.u32("type of \(name)")
                guard let type = GGMLType(rawValue: rawType) else { throw GGUFError.unknownTensorType(tensor: name, raw: rawType) }
                let offset = try r.u64("offset of \(name)")
                guard shape[0] % type.blockSize == 0 else {
                    throw GGUFError.invalidTensorShape(
                        tensor: name, reason: "row length \(shape[0]) is not a multiple of the \(type) block size \(type.blockSize)")
                }
                var elements = 1
                for d in shape {
                    let (m, o) = elements.multipliedReportingOverflow(by: d)
                    guard !o, m < (1 << 48) else { throw GGUFError.invalidTensorShape(tensor: name, reason: "too many elements") }
                    elements = m
                }
                guard offset < (1 << 48) else { throw GGUFError.tensorOutOfBounds(tensor: name, end: Int.max, fileSize: size) }
                guard Int(offset) % alignment == 0 else {
                    throw GGUFError.misalignedTensor(tensor: name, offset: Int(offset), alignment: alignment)
                }
                guard index[name] == nil else { throw GGUFError.duplicate(what: "tensor \(name.debugDescription)") }
                index[name] = infos.count
                infos.append(GGUFTensorInfo(name: name, shape: shape, type: type, offset: Int(offset),
                                            byteCount: type.byteCount(elements: elements)))
            }
            let dataOffset = (r.offset + alignment - 1) / alignment * alignment
            for t in infos {
                let end = dataOffset + t.offset + t.byteCount
                guard end <= size else { throw GGUFError.tensorOutOfBounds(tensor: t.name, end: end, fileSize: size) }
            }
            self.version = version
            self.metadataKeys = keys
            self.metadata = meta
            self.tensors = infos
            self.tensorIndex = index
            self.alignment = alignment
            self.dataOffset = dataOffset
            self.fileSize = size
            self.base = base
        } catch {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    /// The tensor called `name`, if present.
    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The tensor called `name`, or an error naming it.
    public func requireTensor(_ name: String) throws -> GGUFTensorInfo {
        guard let t = tensor(named: name) else { throw GGUFError.missingTensor(name) }
        return t
    }

    /// The mapped bytes of a tensor's data (bounds were checked when the file was opened).
    public func data(for tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + dataOffset + tensor.offset, count: tensor.byteCount)
    }

    /// Advises the kernel how a tensor's pages will be used (`willNeed` to prefetch, `dontNeed` to drop).
    public func advise(_ tensor: GGUFTensorInfo, willNeed: Bool) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (dataOffset + tensor.offset) / page * page
        let end = dataOffset + tensor.offset + tensor.byteCount
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start,
                    willNeed ? Int32(MADV_WILLNEED) : Int32(MADV_DONTNEED))
    }

    // MARK: - Typed metadata access

    /// A required integer value.
    public func int(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw GGUFError.missingKey(key) }
        guard let i = v.int else { throw GGUFError.badValue(key: key, reason: "expected an integer, found \(v.type)") }
        return i
    }

    /// A required float value.
    public func float(_ key: String) throws -> Float {
        guard let v = metadata[key] else { throw GGUFError.missingKey(key) }
        guard let f = v.float else { throw GGUFError.badValue(key: key, reason: "expected a number, found \(v.type)") }
        return f
    }

    /// A required string value.
    public func string(_ key: String) throws -> String {
        guard let v = metadata[key] else { throw GGUFError.missingKey(key) }
        guard let s = v.string else { throw GGUFError.badValue(key: key, reason: "expected a string, found \(v.type)") }
        return s
    }
}

// MARK: - Bounds-checked little-endian reader

struct Reader {
    let base: UnsafeRawPointer
    let size: Int
    var offset = 0
    var wideCounts = true

    init(base: UnsafeRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    mutating func bytes(_ n: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= size - offset else { throw GGUFError.truncated(what: what(), offset: offset, fileSize: size) }
        defer { offset += n }
        return UnsafeRawBufferPointer(start: base + offset, count: n)
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let b = try bytes(MemoryLayout<T>.size, what())
        return T(littleEndian: b.loadUnaligned(as: T.self))
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, what()) }
    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, what()) }

    /// A count: u64 in v2+, u32 in v1.
    mutating func count(_ what: String, limit: UInt64) throws -> Int {
        let c = wideCounts ? try u64(what) : UInt64(try u32(what))
        guard c <= limit else { throw GGUFError.tooLarge(what: what, count: c) }
        return Int(c)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let start = offset
        let n = wideCounts ? try u64(what()) : UInt64(try u32(what()))
        guard n <= UInt64(size - offset) else { throw GGUFError.truncated(what: what(), offset: start, fileSize: size) }
        let b = try bytes(Int(n), what())
        guard let s = String(validating: b, as: UTF8.self) else { throw GGUFError.invalidString(offset: start) }
        return s
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, "value of \(key)"))
        case .int8: return .int8(try load(Int8.self, "value of \(key)"))
        case .uint16: return .uint16(try load(UInt16.self, "value of \(key)"))
        case .int16: return .int16(try load(Int16.self, "value of \(key)"))
        case .uint32: return .uint32(try load(UInt32.self, "value of \(key)"))
        case .int32: return .int32(try load(Int32.self, "value of \(key)"))
        case .uint64: return .uint64(try load(UInt64.self, "value of \(key)"))
        case .int64: return .int64(try load(Int64.self, "value of \(key)"))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, "value of \(key)")))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, "value of \(key)")))
        case .bool:
            let b = try load(UInt8.self, "value of \(key)")
            guard b <= 1 else { throw GGUFError.badValue(key: key, reason: "boolean byte is \(b)") }
            return .bool(b == 1)
        case .string: return .string(try string("value of \(key)"))
        case .array:
            guard depth < 8 else { throw GGUFError.badValue(key: key, reason: "arrays nested too deeply") }
            let rawType = try u32("array element type of \(key)")
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.unknownValueType(key: key, raw: rawType)
            }
            // Every element takes at least one byte, so a count past the bytes left is corrupt.
            let n = try count("array of \(key)", limit: UInt64(size - offset))
            var out: [GGUFValue] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try value(elementType, key: key, depth: depth + 1)) }
            return .array(elementType: elementType, out)
        }
    }
}

extension GGUFFile {
    /// A short fingerprint of the model: a hash of its header (metadata and tensor table) and
    /// its size. Two files with the same fingerprint hold the same tensors at the same places.
    public var fingerprint: String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a
        func mix(_ bytes: UnsafeRawBufferPointer) {
            for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        }
        for key in metadataKeys { key.utf8CString.withUnsafeBytes(mix); "\(metadata[key]!)".utf8CString.withUnsafeBytes(mix) }
        for t in tensors { "\(t.name):\(t.type.rawValue):\(t.shape):\(t.offset)".utf8CString.withUnsafeBytes(mix) }
        withUnsafeBytes(of: UInt64(fileSize)) { mix($0) }
        return String(h, radix: 16)
    }
}
