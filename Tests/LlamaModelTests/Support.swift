import Foundation
import TestSupport
import GGUF
import LlamaKernels
import LlamaModel

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
