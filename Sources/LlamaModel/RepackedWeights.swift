#if canImport(Glibc)
import Glibc
#endif
import CLlamaKernels
import GGUF
import LlamaKernels
import Synchronization

/// Q4_0 and Q8_0 matrices repacked in groups of eight rows for the AVX2 product (`lk_x8_pack`),
/// kept as files in a directory: made once from the model's own bytes (only the tensors this
/// process loads), then mapped read-only like the model. Each file starts with a 64-byte
/// header naming the model's fingerprint and the matrix's shape; a file that does not match
/// (another model, a truncated write) is made again. The products give bitwise the same
/// results as on the original rows, so using a copy or not never changes a token.
///
/// Off unless `enable(directory:)` was called, and only where the AVX2 product runs (on an
/// AVX-512 machine the original rows are faster).
public enum RepackedWeights {
    private struct State: ~Copyable {
        var directory: String?
        /// Mapped copies by path, kept for the life of the process (as the model's mapping is).
        var mapped: [String: UnsafeRawPointer] = [:]
    }
    private static let state = Mutex(State())

    /// The header's first eight bytes, by type.
    static func magic(_ type: GGMLType) -> [UInt8] { Array((type == .q4_0 ? "LCQ4X8\u{0}\u{1}" : "LCQ8X8\u{0}\u{1}").utf8) }
    static let headerSize = 64

    /// Keeps repacked copies in `directory` (created if missing) from now on.
    public static func enable(directory path: String) throws {
        // mkdir -p
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw ModelError.invalidConfig(key: "repack-dir", reason: "cannot create \(prefix): \(String(cString: strerror(errno)))")
            }
        }
        state.withLock { $0.directory = path }
    }

    /// Whether copies are made and used in this process.
    public static var isEnabled: Bool { state.withLock { $0.directory != nil } && KernelISA.best == .avx2 }

    /// `matrix` with its repacked copy attached when copies are on (`isEnabled`) and it
    /// qualifies (Q4_0 or Q8_0, rows a multiple of 8); otherwise `matrix` as it is.
    static func attach(_ matrix: WeightMatrix, name: String, fingerprint: String) throws -> WeightMatrix {
        guard matrix.type == .q4_0 || matrix.type == .q8_0, matrix.rows % 8 == 0, matrix.cols % 32 == 0 else { return matrix }
        let safeName = String(name.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" ? $0 : "-" })
        var m = matrix
        m.packed = try state.withLock { state in
            guard let dir = state.directory else { return nil }
            let path = "\(dir)/\(fingerprint)-\(safeName).\(matrix.type == .q4_0 ? "q4x8" : "q8x8")"
            if let p = state.mapped[path] { return p }
            let p = try mapping(path: path, matrix: matrix, fingerprint: fingerprint)
            state.mapped[path] = p
            return p
        }
        return m
    }

    private static func header(_ matrix: WeightMatrix, fingerprint: String) -> [UInt8] {
        var h = magic(matrix.type)
        withUnsafeBytes(of: UInt64(matrix.rows).littleEndian) { h += $0 }
        withUnsafeBytes(of: UInt64(matrix.cols).littleEndian) { h += $0 }
        h += Array(fingerprint.utf8.prefix(headerSize - h.count))
        return h + [UInt8](repeating: 0, count: headerSize - h.count)
    }

    /// The mapped copy at `path`, made first when missing or not matching.
    private static func mapping(path: String, matrix: WeightMatrix, fingerprint: String) throws -> UnsafeRawPointer {
        let expected = header(matrix, fingerprint: fingerprint)
        let size = headerSize + matrix.byteCount
        if let p = mapIfValid(path: path, size: size, header: expected) { return p }
        try write(path: path, matrix: matrix, header: expected, size: size)
        guard let p = mapIfValid(path: path, size: size, header: expected) else {
            throw ModelError.invalidConfig(key: "repack-dir", reason: "\(path) does not read back as written")
        }
        return p
    }

    /// The data of the file at `path` mapped read-only, if it has `size` bytes and `header`.
    private static func mapIfValid(path: String, size: Int, header: [UInt8]) -> UnsafeRawPointer? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) == size else { return nil }
        guard let base = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else { return nil }
        _ = madvise(base, size, MADV_HUGEPAGE)  // as for the model file (GGUFFile)
        guard memcmp(base, header, headerSize) == 0 else {
            munmap(base, size)
            return nil
        }
        return UnsafeRawPointer(base) + headerSize
    }

    /// Writes the repacked copy beside its final name, then renames it into place.
    private static func write(path: String, matrix: WeightMatrix, header: [UInt8], size: Int) throws {
        let temporary = "\(path).tmp-\(getpid())"
        func failure(_ what: String, _ code: Int32 = errno) -> ModelError {
            unlink(temporary)
            return ModelError.invalidConfig(key: "repack-dir", reason: "\(what) \(temporary): \(String(cString: strerror(code)))")
        }
        let fd = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("cannot create") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw failure("cannot size") }
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            throw failure("cannot map")
        }
        header.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: headerSize) }
        let status = lk_x8_pack(Int32(matrix.type.rawValue), matrix.data, matrix.rowStride, Int64(matrix.rows), Int64(matrix.cols),
                                base + headerSize)
        let synced = msync(base, size, MS_SYNC) == 0
        let syncError = errno
        munmap(base, size)
        guard status == 0 else { throw failure("cannot repack into", EINVAL) }
        guard synced else { throw failure("cannot write", syncError) }
        // The written pages sit in the page cache as small pages; drop them (they are on disk
        // now) so that the mapping for use reads them back as 2 MiB pages.
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        guard rename(temporary, path) == 0 else { throw failure("cannot rename") }
    }
}
