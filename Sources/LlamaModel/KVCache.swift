#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

import LlamaKernels

/// How the KV cache stores keys and values.
public enum KVCacheType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE halves (llama.cpp's default): half the memory and half the bytes read per attended
    /// position; each value is rounded to nearest even once, when it is stored.
    case f16
    /// Floats: the values exactly as the layer computed them.
    case f32

    public var bytesPerElement: Int { self == .f16 ? 2 : 4 }
    public var description: String { rawValue }
}

/// Keys and values of every sequence in flight, for the layers of one slice.
///
/// Layout: `(layer, slot, position, kvDim)` in f16 or f32. The storage is reserved as anonymous
/// virtual memory, so a slot costs physical memory only for the positions it has used.
public final class KVCache {
    public let layerCount: Int
    public let maxSequences: Int
    public let contextLength: Int
    public let kvDim: Int
    public let type: KVCacheType
    /// Number of positions filled in each slot.
    public private(set) var lengths: [Int]

    let keys: UnsafeMutableRawPointer
    let values: UnsafeMutableRawPointer
    private let bytesPerTensor: Int

    public init(layerCount: Int, maxSequences: Int, contextLength: Int, kvDim: Int, type: KVCacheType = .f16) {
        precondition(layerCount > 0 && maxSequences > 0 && contextLength > 0 && kvDim > 0)
        self.layerCount = layerCount
        self.maxSequences = maxSequences
        self.contextLength = contextLength
        self.kvDim = kvDim
        self.type = type
        self.lengths = [Int](repeating: 0, count: maxSequences)
        bytesPerTensor = layerCount * maxSequences * contextLength * kvDim * type.bytesPerElement
        keys = Self.reserve(bytesPerTensor)
        values = Self.reserve(bytesPerTensor)
    }

    deinit {
        munmap(keys, bytesPerTensor)
        munmap(values, bytesPerTensor)
    }

    private static func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(p != MAP_FAILED && p != nil, "cannot reserve \(bytes) bytes for the KV cache")
        return p!
    }

    /// Index (in elements) of the first value of a cached row.
    @inline(__always)
    func offset(layer: Int, slot: Int, position: Int) -> Int {
        ((layer * maxSequences + slot) * contextLength + position) * kvDim
    }

    /// Stores one position's key and value rows (`kvDim` floats each), converted to the cache's type.
    @inline(__always)
    func store(layer: Int, slot: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let off = offset(layer: layer, slot: slot, position: position)
        switch type {
        case .f32:
            (keys.assumingMemoryBound(to: Float.self) + off).update(from: key, count: kvDim)
            (values.assumingMemoryBound(to: Float.self) + off).update(from: value, count: kvDim)
        case .f16:
            convertF32ToF16(key, keys.assumingMemoryBound(to: UInt16.self) + off, count: kvDim)
            convertF32ToF16(value, values.assumingMemoryBound(to: UInt16.self) + off, count: kvDim)
        }
    }

    /// Bytes of physical memory the filled positions occupy.
    public var usedBytes: Int { lengths.reduce(0, +) * layerCount * kvDim * 2 * type.bytesPerElement }

    /// Checks that a token at `position` of `slot` can be written next.
    func checkWrite(slot: Int, position: Int) throws {
        guard slot >= 0, slot < maxSequences else {
            throw ModelError.sequence("sequence id \(slot) is outside 0..<\(maxSequences)")
        }
        guard position >= 0, position < contextLength else {
            throw ModelError.sequence("position \(position) of sequence \(slot) is outside the context of \(contextLength)")
        }
        guard position <= lengths[slot] else {
            throw ModelError.sequence("position \(position) of sequence \(slot) skips ahead of its \(lengths[slot]) cached positions")
        }
    }

    /// Marks `slot` as holding positions `0..<length` (a later token at `length - 1` truncates the rest).
    func setLength(slot: Int, _ length: Int) { lengths[slot] = length }

    /// Forgets a sequence and returns its pages to the system.
    public func release(slot: Int) {
        guard slot >= 0, slot < maxSequences else { return }
        let used = lengths[slot]
        lengths[slot] = 0
        guard used > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        for layer in 0..<layerCount {
            for base in [keys, values] {
                let start = base + offset(layer: layer, slot: slot, position: 0) * type.bytesPerElement
                let bytes = used * kvDim * type.bytesPerElement
                // Round inward to whole pages; partial pages are simply overwritten later.
                let s = (Int(bitPattern: start) + page - 1) / page * page
                let e = (Int(bitPattern: start) + bytes) / page * page
                if e > s { _ = madvise(UnsafeMutableRawPointer(bitPattern: s), e - s, Int32(MADV_DONTNEED)) }
            }
        }
    }

    /// Makes `destination` hold a copy of positions `0..<count` of `source` (a prompt computed
    /// once for several choices). The count is clamped to what `source` holds.
    /// - Throws: ``ModelError/sequence(_:)`` for a slot outside the cache.
    public func copy(from source: Int, to destination: Int, count: Int) throws {
        guard (0..<maxSequences).contains(source), (0..<maxSequences).contains(destination) else {
            throw ModelError.sequence("cannot copy sequence \(source) to \(destination): slots are 0..<\(maxSequences)")
        }
        let n = max(0, min(count, lengths[source]))
        guard source != destination else { return }
        let rowBytes = kvDim * type.bytesPerElement
        for layer in 0..<layerCount {
            for base in [keys, values] {
                let from = base + offset(layer: layer, slot: source, position: 0) * type.bytesPerElement
                let to = base + offset(layer: layer, slot: destination, position: 0) * type.bytesPerElement
                to.copyMemory(from: from, byteCount: n * rowBytes)
            }
        }
        lengths[destination] = n
    }

    /// Forgets every sequence.
    public func releaseAll() {
        for s in 0..<maxSequences { release(slot: s) }
    }
}
