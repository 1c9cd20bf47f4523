import TestSupport
import Foundation
import GGUF
import LlamaModel
import Testing

/// The engine's logits against an independent numpy implementation (Tests/Reference/llama_ref.py)
/// reading the same synthetic GGUF files with the `gguf` Python package.
@Suite("Forward pass against the numpy reference")
struct ReferenceTests {
    struct Case: CustomStringConvertible, Sendable {
        let type: GGMLType
        let heads: Int
        let kvHeads: Int
        /// Largest difference allowed, as a fraction of the largest reference logit.
        let tolerance: Float
        /// Write no `output.weight`: the head falls back to the embedding.
        var tied = false
        var description: String { "\(type) \(heads)/\(kvHeads) heads\(tied ? ", tied head" : "")" }
    }

    // Tolerances: F32/F16/BF16 weights are used as stored with f32 activations, so only
    // summation order and float32 vs float64 differ (1e-3 of the logit scale). The
    // quantized types multiply against activations the engine quantizes to 8 bits per value
    // (Q8_0 blocks of 32, Q8_K blocks of 256), as llama.cpp does; that rounding (a relative
    // error of about 0.4 % per activation) passes through every layer, so we allow 3 %.
    static let cases: [Case] = [
        Case(type: .f32, heads: 4, kvHeads: 4, tolerance: 1e-3),
        Case(type: .f32, heads: 8, kvHeads: 2, tolerance: 1e-3),
        Case(type: .f16, heads: 8, kvHeads: 2, tolerance: 1e-3),
        Case(type: .bf16, heads: 4, kvHeads: 2, tolerance: 1e-3),
        Case(type: .q8_0, heads: 8, kvHeads: 4, tolerance: 0.03),
        Case(type: .q4_0, heads: 8, kvHeads: 2, tolerance: 0.03),
        Case(type: .q4_K, heads: 4, kvHeads: 4, tolerance: 0.03),
        Case(type: .q6_K, heads: 8, kvHeads: 2, tolerance: 0.03),
        Case(type: .q8_0, heads: 4, kvHeads: 1, tolerance: 0.03, tied: true),
    ]

    @Test("logits match", arguments: cases)
    func logitsMatch(_ c: Case) throws {
        let dir = try TemporaryDirectory()
        let synth = SyntheticModel(dim: 256, layers: 2, heads: c.heads, kvHeads: c.kvHeads, ffn: 512, context: 128,
                                   type: c.type, seed: UInt64(c.type.rawValue) + 7, untiedOutput: !c.tied)
        let path = try writeSyntheticModel(synth, in: dir, name: "model.gguf")
        let tokens: [Int32] = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203]

        let engine = try LlamaEngine(path: path, threads: 2)
        let ours = try engine.evaluate(tokens, startPosition: 0, logits: .last)

        let json = try runProcess(referencePython, [Repo.reference, path, "--tokens", tokens.map(String.init).joined(separator: ",")])
        let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let reference = (decoded["logits"] as! [NSNumber]).map { $0.floatValue }
        #expect(reference.count == ours.count)
        let scale = reference.map(abs).max()!
        let diff = maxAbsDifference(ours, reference)
        #expect(diff <= c.tolerance * scale, "\(c): max |Δ| \(diff) vs logit scale \(scale)")
        #expect(argmax(ours[...]) == argmax(reference[...]), "\(c): top token differs")
        withExtendedLifetime(dir) {}
    }
}
