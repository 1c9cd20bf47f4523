import TestSupport
import Foundation
import GGUF
import LlamaKernels
import LlamaModel
import Testing

enum Paths {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let maker = root.appendingPathComponent("scripts/make_test_gguf.py").path
    static let vocab = root.appendingPathComponent("Tests/LlamaTokenizerTests/Fixtures/ggml-vocab-llama-spm.gguf").path
    static var python: String {
        if let p = ProcessInfo.processInfo.environment["LLAMA_REF_PYTHON"], !p.isEmpty { return p }
        return "/usr/bin/env"
    }
}

final class Scratch {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func run(_ exe: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = exe == "/usr/bin/env" ? ["python3"] + args : args
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw GGUFError.writeFailed(path: exe, reason: "exit \(p.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

/// A metadata value as the independent Python writer recorded it.
func expected(_ entry: [String: Any]) -> GGUFValue? {
    func scalar(_ type: String, _ v: Any) -> GGUFValue? {
        let n = v as? NSNumber
        switch type {
        case "UINT8": return n.map { .uint8($0.uint8Value) }
        case "INT8": return n.map { .int8($0.int8Value) }
        case "UINT16": return n.map { .uint16($0.uint16Value) }
        case "INT16": return n.map { .int16($0.int16Value) }
        case "UINT32": return n.map { .uint32($0.uint32Value) }
        case "INT32": return n.map { .int32($0.int32Value) }
        case "UINT64": return n.map { .uint64($0.uint64Value) }
        case "INT64": return n.map { .int64($0.int64Value) }
        case "FLOAT32": return n.map { .float32($0.floatValue) }
        case "FLOAT64": return n.map { .float64($0.doubleValue) }
        case "BOOL": return (v as? Bool).map { .bool($0) }
        case "STRING": return (v as? String).map { .string($0) }
        default: return nil
        }
    }
    return scalar(entry["type"] as! String, entry["value"]!)
}

@Suite("GGUF reader")
struct GGUFReaderTests {
    /// Files written by the `gguf` Python package (scripts/make_test_gguf.py), with JSON sidecars.
    @Test("reads files written by the gguf Python package", arguments: ["all-types-v3", "all-types-v2", "align64-v3"])
    func independentWriter(_ name: String) throws {
        let dir = try Scratch()
        _ = try run(Paths.python, [Paths.maker, dir.path])
        let file = try GGUFFile(path: "\(dir.path)/\(name).gguf")
        let sidecar = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir.path)/\(name).json"))) as! [String: Any]
        #expect(Int(file.version) == sidecar["version"] as! Int)
        #expect(file.alignment == sidecar["alignment"] as! Int)
        var checkedScalars = 0
        for entry in sidecar["metadata"] as! [[String: Any]] {
            let key = entry["key"] as! String
            let value = try #require(file.metadata[key], "missing \(key)")
            if let e = expected(entry) {
                #expect(value == e, "\(key)")
                checkedScalars += 1
            } else {
                #expect(value.type == .array, "\(key)")
                let items = entry["value"] as! [Any]
                #expect(value.array?.count == items.count, "\(key)")
                if let et = entry["element_type"] as? String, et != "ARRAY" {
                    for (i, item) in items.enumerated() {
                        #expect(value.array?[i] == expected(["type": et, "value": item]), "\(key)[\(i)]")
                    }
                }
            }
        }
        #expect(checkedScalars > 0)
        // Tensors: shape, type, offset, and values through our dequantization.
        for t in sidecar["tensors"] as! [[String: Any]] {
            let info = try file.requireTensor(t["name"] as! String)
            #expect(info.shape == (t["shape"] as! [Int]))
            #expect(info.type.description == (t["type"] as! String).uppercased())
            #expect(info.byteCount == t["n_bytes"] as! Int)
            let values = (t["values"] as! [NSNumber]).map(\.floatValue)
            var ours = [Float](repeating: 0, count: info.elementCount)
            ours.withUnsafeMutableBufferPointer { dequantizeRow(info.type, file.data(for: info).baseAddress!, $0.baseAddress!, count: info.elementCount) }
            #expect(ours == values, "\(info.name)")
        }
    }

    @Test("our writer round-trips every value type, nested and empty arrays, and tensors")
    func writerRoundTrip() throws {
        let dir = try Scratch()
        let values: [String: GGUFValue] = [
            "a.u8": .uint8(200), "a.i8": .int8(-5), "a.u16": .uint16(60000), "a.i16": .int16(-30000),
            "a.u32": .uint32(4_000_000_000), "a.i32": .int32(-2_000_000_000), "a.f32": .float32(1.5),
            "a.bool": .bool(true), "a.str": .string("héllo ▁ 🦙"), "a.u64": .uint64(.max), "a.i64": .int64(.min),
            "a.f64": .float64(1.0 / 3.0),
            "a.arr": .array(elementType: .string, [.string("x"), .string("")]),
            "a.empty": .array(elementType: .float32, []),
            "a.nested": .array(elementType: .array, [.array(elementType: .int32, [.int32(1), .int32(2)]), .array(elementType: .int32, [])]),
        ]
        for version: UInt32 in [2, 3] {
            let w = GGUFWriter(alignment: 64, version: version)
            for (k, v) in values.sorted(by: { $0.key < $1.key }) { w.set(k, v) }
            w.addTensor(name: "t", type: .f32, shape: [3, 2]) { b in
                let f = b.bindMemory(to: Float.self)
                for i in 0..<6 { f[i] = Float(i) }
            }
            w.addTensor(name: "u", type: .q8_0, shape: [64]) { b in
                var src = (0..<64).map { Float($0) / 10 }
                src.withUnsafeMutableBufferPointer { quantizeRow(.q8_0, $0.baseAddress!, b.baseAddress!, count: 64) }
            }
            let path = "\(dir.path)/rt\(version).gguf"
            try w.write(to: path)
            let f = try GGUFFile(path: path)
            #expect(f.version == version)
            #expect(f.alignment == 64)
            for (k, v) in values { #expect(f.metadata[k] == v, "\(k)") }
            let t = try f.requireTensor("t")
            #expect(t.shape == [3, 2] && t.type == .f32 && t.offset % 64 == 0)
            #expect(Array(f.data(for: t).bindMemory(to: Float.self)) == [0, 1, 2, 3, 4, 5])
            #expect(try f.requireTensor("u").offset % 64 == 0)
        }
    }
}

@Suite("GGUF reader rejects bad files with a clear error")
struct GGUFCorruptionTests {
    /// A small valid model file to damage.
    static func validFile(_ dir: Scratch) throws -> (path: String, bytes: [UInt8]) {
        let path = "\(dir.path)/ok.gguf"
        let w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("x.list", .array(elementType: .uint32, [.uint32(1), .uint32(2)]))
        w.addTensor(name: "w", type: .f32, shape: [32, 4]) { _ in }
        w.addTensor(name: "q", type: .q4_0, shape: [64]) { _ in }
        try w.write(to: path)
        return (path, Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    static func write(_ bytes: [UInt8], _ dir: Scratch, _ name: String) throws -> String {
        let p = "\(dir.path)/\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func expectError(_ bytes: [UInt8], _ dir: Scratch, _ check: (GGUFError) -> Bool) throws {
        let p = try Self.write(bytes, dir, "bad.gguf")
        do {
            _ = try GGUFFile(path: p)
            Issue.record("expected an error")
        } catch let e as GGUFError {
            #expect(check(e), "\(e)")
            #expect(!e.description.isEmpty)
        }
    }

    @Test("wrong magic, unsupported version")
    func magicAndVersion() throws {
        let dir = try Scratch()
        var b = try Self.validFile(dir).bytes
        b[0] = UInt8(ascii: "X")
        try expectError(b, dir) { if case .badMagic = $0 { return true }; return false }
        b = try Self.validFile(dir).bytes
        b[4] = 9
        try expectError(b, dir) { $0 == .unsupportedVersion(9) }
    }

    @Test("every truncation is an error, never a crash")
    func truncations() throws {
        let dir = try Scratch()
        let (path, b) = try Self.validFile(dir)
        // Every cut before the end of the last tensor's data (what follows is only padding).
        let file = try GGUFFile(path: path)
        let end = file.tensors.map { file.dataOffset + $0.offset + $0.byteCount }.max()!
        for cut in 0..<end {
            let p = try Self.write(Array(b[0..<cut]), dir, "cut.gguf")
            #expect(throws: GGUFError.self, "cut at \(cut)") { _ = try GGUFFile(path: p) }
        }
    }

    @Test("unknown tensor type, unknown value type, tensor past the end")
    func fieldDamage() throws {
        let dir = try Scratch()
        let (path, b) = try Self.validFile(dir)
        let file = try GGUFFile(path: path)
        // The type field of tensor "q" is the u32 before its u64 offset, just before the data section padding.
        func find(_ needle: [UInt8]) -> Int {
            for i in 0...(b.count - needle.count) where Array(b[i..<i + needle.count]) == needle { return i }
            return -1
        }
        let qName = find([1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "q")])
        #expect(qName > 0)
        let qType = qName + 9 + 4 + 8   // name, n_dims, one dimension
        var t = b
        t[qType] = 77
        try expectError(t, dir) { $0 == .unknownTensorType(tensor: "q", raw: 77) }
        // Value type of "x.list" (the u32 after the key).
        let key = find(Array("x.list".utf8))
        var v = b
        v[key + 6] = 42
        try expectError(v, dir) { $0 == .unknownValueType(key: "x.list", raw: 42) }
        // A tensor whose data runs past the end of the file.
        let q = try file.requireTensor("q")
        let end = file.dataOffset + q.offset + q.byteCount
        try expectError(Array(b[0..<(end - 1)]), dir) { if case .tensorOutOfBounds(tensor: "q", _, _) = $0 { return true }; return false }
        // Random damage anywhere: an error or a readable file, never a crash.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var d = b
            for _ in 0..<3 { d[Int.random(in: 0..<file.dataOffset, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            let p = try Self.write(d, dir, "rand.gguf")
            _ = try? GGUFFile(path: p)
        }
    }

    @Test("missing keys and tensors, and shapes that disagree with the configuration")
    func modelLevelErrors() throws {
        let dir = try Scratch()
        let vocab = try GGUFFile(path: Paths.vocab)
        let path = "\(dir.path)/m.gguf"
        try SyntheticModel(dim: 64, layers: 1, heads: 4, ffn: 96, context: 32).write(to: path, vocab: vocab, pool: ThreadPool(threadCount: 1))
        let good = try GGUFFile(path: path)
        #expect(try LlamaConfig(gguf: good).dim == 64)
        // Rewrite the file without one key, and with one tensor of the wrong shape or missing.
        func rewrite(dropKey: String? = nil, reshape: String? = nil, dropTensor: String? = nil) throws -> GGUFFile {
            let w = GGUFWriter()
            for k in good.metadataKeys where k != dropKey { w.set(k, good.metadata[k]!) }
            for t in good.tensors where t.name != dropTensor {
                let shape = t.name == reshape ? [t.shape[0], t.shape[1] + 1] : t.shape
                let src = good.data(for: t)
                w.addTensor(name: t.name, type: t.type, shape: shape) { b in
                    b.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<min(src.count, b.count)]))
                }
            }
            let p = "\(dir.path)/bad-\(UUID().uuidString).gguf"
            try w.write(to: p)
            return try GGUFFile(path: p)
        }
        #expect(throws: GGUFError.missingKey("llama.embedding_length")) { try LlamaConfig(gguf: try rewrite(dropKey: "llama.embedding_length")) }
        let reshaped = try rewrite(reshape: "blk.0.attn_k.weight")
        #expect(throws: ModelError.tensorShape(tensor: "blk.0.attn_k.weight", expected: [64, 64], found: [64, 65])) {
            try LlamaTensorLoader(file: reshaped, config: LlamaConfig(gguf: reshaped)).layer(0)
        }
        let missing = try rewrite(dropTensor: "blk.0.ffn_up.weight")
        #expect(throws: GGUFError.missingTensor("blk.0.ffn_up.weight")) {
            try LlamaTensorLoader(file: missing, config: LlamaConfig(gguf: missing)).layer(0)
        }
        #expect(throws: GGUFError.self) { _ = try GGUFFile(path: "\(dir.path)/does-not-exist.gguf") }
    }
}
