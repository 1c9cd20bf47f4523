// libFuzzer harness: the GGUF reader (`GGUFFile(path:)`, on the input written to a temporary
// file, since the reader maps files), and for a file that parses: every tensor's bytes (first
// and last), the fingerprint, `LlamaConfig(gguf:)`, `Vocabulary(gguf:)` and, for a vocabulary
// that loads, a tokenizer built from it encoding and decoding a little text. Any input may be
// rejected with an error.
//
// With LLAMA_FUZZ_WRITE_SEEDS=DIR the harness instead writes small valid GGUF files into DIR
// and exits (how Tests/Fuzz/Corpus/gguf was made).

import FuzzDriver
import GGUF
import LlamaModel
import LlamaTokenizer
#if canImport(Glibc)
import Glibc
#endif

let inputPath = "/tmp/llama-fuzz-gguf-\(getpid()).gguf"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let out = fopen(inputPath, "wb") else { fatalError("cannot write \(inputPath)") }
    precondition(fwrite(data, 1, size, out) == size, "short write to \(inputPath)")
    fclose(out)
    defer { unlink(inputPath) }

    guard let file = try? GGUFFile(path: inputPath) else { return 0 }
    var sum = 0
    for tensor in file.tensors {
        precondition(file.tensor(named: tensor.name) == tensor, "tensor \(tensor.name) is not found by name")
        let bytes = file.data(for: tensor)
        precondition(bytes.count == tensor.byteCount, "tensor \(tensor.name) has the wrong byte count")
        if let first = bytes.first, let last = bytes.last { sum &+= Int(first) &+ Int(last) }
    }
    _ = file.fingerprint
    for key in file.metadataKeys { _ = "\(file.metadata[key]!)" }
    _ = try? LlamaConfig(gguf: file)
    if let vocabulary = try? Vocabulary(gguf: file) {
        let tokenizer = LlamaTokenizer(vocabulary: vocabulary)
        let ids = tokenizer.encode("Hello world, <s> \u{00E9}\u{1F600}\n\t 12")
        precondition(ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize }, "encode returned an id outside the vocabulary")
        _ = tokenizer.decode(ids)
        _ = tokenizer.decode((0..<Int32(min(tokenizer.vocabularySize, 300))).map { $0 })
    }
    return sum == -1 ? 1 : 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    guard let directory = getenv("LLAMA_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }) else { return 0 }
    do {
        try writeSeeds(to: directory)
    } catch {
        fatalError("cannot write the seeds: \(error)")
    }
    exit(0)
}

/// A tiny Llama model file (configuration, a vocabulary of the special and byte tokens and
/// a few words, small tensors), the same as v2 with another alignment, a vocabulary alone,
/// and a file of every metadata type.
func writeSeeds(to directory: String) throws {
    var pieces = ["<unk>", "<s>", "</s>"]
    pieces += (0..<256).map { b in "<0x" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true) + ">" }
    pieces += ["\u{2581}", "\u{2581}H", "ello", "\u{2581}Hello", "\u{2581}world", "o", "l", "e", ",", "\u{2581}w"]
    let types: [GGUFValue] = pieces.indices.map { i in .int32(i < 3 ? 3 : i < 259 ? 6 : 1) }
    let scores: [GGUFValue] = pieces.indices.map { .float32(-Float($0)) }

    func vocabulary(_ w: GGUFWriter) {
        w.set("tokenizer.ggml.model", .string("llama"))
        w.set("tokenizer.ggml.tokens", .array(elementType: .string, pieces.map { .string($0) }))
        w.set("tokenizer.ggml.scores", .array(elementType: .float32, scores))
        w.set("tokenizer.ggml.token_type", .array(elementType: .int32, types))
        w.set("tokenizer.ggml.bos_token_id", .uint32(1))
        w.set("tokenizer.ggml.eos_token_id", .uint32(2))
        w.set("tokenizer.ggml.unknown_token_id", .uint32(0))
        w.set("tokenizer.ggml.add_bos_token", .bool(true))
    }
    func model(_ w: GGUFWriter) {
        w.set("general.architecture", .string("llama"))
        w.set("llama.embedding_length", .uint32(32))
        w.set("llama.feed_forward_length", .uint32(64))
        w.set("llama.block_count", .uint32(1))
        w.set("llama.attention.head_count", .uint32(4))
        w.set("llama.attention.head_count_kv", .uint32(2))
        w.set("llama.rope.dimension_count", .uint32(8))
        w.set("llama.rope.freq_base", .float32(10000))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(1e-5))
        w.set("llama.context_length", .uint32(64))
        vocabulary(w)
        w.addTensor(name: "output_norm.weight", type: .f32, shape: [32]) { buffer in
            for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: i) }
        }
        w.addTensor(name: "blk.0.attn_q.weight", type: .q8_0, shape: [32, 2]) { buffer in
            for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: i &* 7) }
        }
    }

    let tiny = GGUFWriter()
    model(tiny)
    try tiny.write(to: "\(directory)/tiny-llama-v3.gguf")

    let v2 = GGUFWriter(alignment: 64, version: 2)
    model(v2)
    try v2.write(to: "\(directory)/tiny-llama-v2-align64.gguf")

    let vocab = GGUFWriter()
    vocabulary(vocab)
    try vocab.write(to: "\(directory)/vocabulary-only.gguf")

    let all = GGUFWriter()
    all.set("u8", .uint8(255)); all.set("i8", .int8(-128)); all.set("u16", .uint16(65535)); all.set("i16", .int16(-1))
    all.set("u32", .uint32(.max)); all.set("i32", .int32(.min)); all.set("f32", .float32(.nan)); all.set("b", .bool(false))
    all.set("s", .string("")); all.set("u64", .uint64(.max)); all.set("i64", .int64(.min)); all.set("f64", .float64(-0.0))
    all.set("empty", .array(elementType: .uint8, []))
    all.set("nested", .array(elementType: .array, [.array(elementType: .int16, [.int16(1), .int16(-2)]),
                                                    .array(elementType: .string, [.string("x")])]))
    all.addTensor(name: "t", type: .f16, shape: [1]) { buffer in buffer[0] = 0x3C; buffer[1] = 0 }
    try all.write(to: "\(directory)/all-types.gguf")
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_gguf_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
