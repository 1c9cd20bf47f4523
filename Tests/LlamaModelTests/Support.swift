import Foundation
import GGUF
import LlamaKernels
import LlamaModel

/// Paths of the repository and the files tests use.
enum Repo {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let vocab = root.appendingPathComponent("Tests/LlamaTokenizerTests/Fixtures/ggml-vocab-llama-spm.gguf").path
    static let demoModel = root.appendingPathComponent("models/demo/llama-cluster-demo.q8_0.gguf").path
    static let heldout = root.appendingPathComponent("models/demo/heldout.txt").path
    static let reference = root.appendingPathComponent("Tests/Reference/llama_ref.py").path
    static let fixtures = root.appendingPathComponent("Tests/LlamaModelTests/Fixtures")
}

/// A scratch directory removed when the value is released.
final class TemporaryDirectory {
    let path: String
    init() throws {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("llamacluster-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        path = p
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

struct ProcessFailure: Error, CustomStringConvertible {
    let description: String
}

/// Runs a program and returns its standard output; throws with its standard error on failure.
func runProcess(_ executable: String, _ arguments: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read both pipes before waiting so a large output cannot block the child.
    var outData = Data(), errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw ProcessFailure(description: "\(executable) \(arguments.joined(separator: " ")) exited with \(p.terminationStatus): \(String(decoding: errData, as: UTF8.self))")
    }
    return String(decoding: outData, as: UTF8.self)
}

/// The Python interpreter with numpy and gguf: $LLAMA_REF_PYTHON, else python3 on PATH.
var referencePython: String {
    if let p = ProcessInfo.processInfo.environment["LLAMA_REF_PYTHON"], !p.isEmpty { return p }
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let candidate = "\(dir)/python3"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return "/usr/bin/python3"
}

/// Writes a synthetic model into `dir` and returns its path.
func writeSyntheticModel(_ model: SyntheticModel, in dir: TemporaryDirectory, name: String) throws -> String {
    let path = dir.file(name)
    let vocab = try GGUFFile(path: Repo.vocab)
    try model.write(to: path, vocab: vocab, pool: ThreadPool(threadCount: 2))
    return path
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}

func argmax(_ a: ArraySlice<Float>) -> Int {
    var best = a.startIndex
    for i in a.indices where a[i] > a[best] { best = i }
    return best - a.startIndex
}
