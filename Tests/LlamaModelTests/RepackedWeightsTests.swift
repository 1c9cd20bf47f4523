import Foundation
import GGUF
import LlamaKernels
import LlamaModel
import TestSupport
import Testing

/// `--repack-dir`: Q4_0 and Q8_0 matrices repacked once into files and mapped. The logits are bitwise
/// those of the original rows; a second run reuses the files; a file that does not match
/// (cut short, or another model's header) is made again. Separate processes, because the
/// setting is process-wide.
@Suite("Repacked Q4_0 and Q8_0 weights", .timeLimit(.minutes(3)))
struct RepackedWeightsTests {
    @Test("logits with repacked copies equal those without, bitwise; copies are reused, and remade when they do not match",
          arguments: [GGMLType.q4_0, .q8_0])
    func logitsAndFiles(type: GGMLType) throws {
        let dir = try TemporaryDirectory()
        let synth = SyntheticModel(dim: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 256, context: 64, type: type, seed: 11)
        let model = try writeSyntheticModel(synth, in: dir, name: "\(type).gguf")
        let coord = Repo.binDirectory.appendingPathComponent("llama-coord").path
        let repack = dir.file("repacked")
        let plain = try runProcess(coord, ["logits", "--model", model, "--prompt", "Hello world", "--threads", "2"])
        let first = try runProcess(coord, ["logits", "--model", model, "--prompt", "Hello world", "--threads", "2", "--repack-dir", repack])
        #expect(first == plain)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: repack))?.sorted() ?? []
        guard KernelISA.best == .avx2 else {
            #expect(files.isEmpty, "copies are made only where the AVX2 product runs")
            return
        }
        // Seven matrices per layer and the output head; not the embedding.
        #expect(files.count == 2 * 7 + 1, "\(files)")
        #expect(!files.contains { $0.contains("token_embd") })
        #expect(files.allSatisfy { $0.hasSuffix(type == .q4_0 ? ".q4x8" : ".q8x8") }, "\(files)")
        let victim = repack + "/" + files[0]
        let modified = try FileManager.default.attributesOfItem(atPath: victim)[.modificationDate] as? Date
        Thread.sleep(forTimeInterval: 0.05)
        #expect(try runProcess(coord, ["logits", "--model", model, "--prompt", "Hello world", "--threads", "2", "--repack-dir", repack]) == plain)
        #expect(try FileManager.default.attributesOfItem(atPath: victim)[.modificationDate] as? Date == modified, "reused, not remade")
        // Cut short, then a header naming another model: each is remade and the logits stay the same.
        let size = try FileManager.default.attributesOfItem(atPath: victim)[.size] as! Int
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: victim))
        try handle.truncate(atOffset: UInt64(size / 2))
        try handle.close()
        #expect(try runProcess(coord, ["logits", "--model", model, "--prompt", "Hello world", "--threads", "2", "--repack-dir", repack]) == plain)
        #expect(try FileManager.default.attributesOfItem(atPath: victim)[.size] as! Int == size)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        bytes[30] ^= 0xff  // inside the model fingerprint
        try bytes.write(to: URL(fileURLWithPath: victim))
        #expect(try runProcess(coord, ["logits", "--model", model, "--prompt", "Hello world", "--threads", "2", "--repack-dir", repack]) == plain)
        #expect(try Data(contentsOf: URL(fileURLWithPath: victim))[30] != bytes[30], "remade")
    }
}
