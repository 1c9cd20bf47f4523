// libFuzzer harness: the Llama 2 tokenizer with its real vocabulary (the test fixture, loaded
// once; LLAMA_FUZZ_VOCAB names another GGUF file). Each input is encoded as text (decoded
// leniently, and as it is when it is valid UTF-8) and read as a list of token ids (two bytes
// each, taken modulo the vocabulary size) to decode, at once and through the streaming
// decoder, which must give the same text.

import FuzzDriver
import GGUF
import LlamaTokenizer
#if canImport(Glibc)
import Glibc
#endif

let tokenizer: LlamaTokenizer = {
    let path = getenv("LLAMA_FUZZ_VOCAB").map { String(cString: $0) } ?? defaultVocabularyPath()
    do {
        return LlamaTokenizer(vocabulary: try Vocabulary(gguf: try GGUFFile(path: path)))
    } catch {
        fatalError("cannot load the vocabulary at \(path): \(error)")
    }
}()

/// Tests/LlamaTokenizerTests/Fixtures/ggml-vocab-llama-spm.gguf, found from this file's path.
func defaultVocabularyPath() -> String {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // tokenizer/TokenizerFuzz.swift under Tests/Fuzz
    return (parts + ["LlamaTokenizerTests", "Fixtures", "ggml-vocab-llama-spm.gguf"]).joined(separator: "/")
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    _ = tokenizer.vocabularySize  // load before the first input, outside its time limit
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let vocabularySize = tokenizer.vocabularySize

    let lenient = String(decoding: bytes, as: UTF8.self)
    for addBOS in [true, false] {
        let ids = tokenizer.encode(lenient, addBOS: addBOS)
        precondition(ids.allSatisfy { $0 >= 0 && Int($0) < vocabularySize }, "encode returned an id outside the vocabulary")
        _ = tokenizer.decode(ids)
    }
    if let valid = String(validating: bytes, as: UTF8.self) {
        _ = tokenizer.encode(valid)
    }

    var ids: [Int32] = []
    var i = 0
    while i + 1 < size {
        ids.append(Int32((Int(bytes[i]) | Int(bytes[i + 1]) << 8) % vocabularySize))
        i += 2
    }
    let text = tokenizer.decode(ids)
    _ = tokenizer.decodeBytes(ids)
    var streaming = StreamingDecoder(tokenizer: tokenizer)
    var streamed = ""
    for id in ids { streamed += streaming.append(id) }
    streamed += streaming.finish()
    precondition(streamed == text, "the streaming decoder and decode disagree on \(ids)")
    return 0
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_tokenizer_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
