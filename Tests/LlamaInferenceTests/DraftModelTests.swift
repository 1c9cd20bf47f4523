import Foundation
import GGUF
import LlamaInference
import LlamaModel
import LlamaSampling
import LlamaTokenizer
import TestSupport
import Testing

/// Speculative decoding with a draft model (`--draft-model`): the demo model's first two
/// layers (written by `writeFirstLayers`) draft for the whole model. The text is what one
/// token per frame gives, greedy and seeded; the whole model as its own draft has every
/// greedy draft accepted; a draft model with another vocabulary is refused by name.
@Suite("Speculative decoding with a draft model", .serialized, .timeLimit(.minutes(3)))
struct DraftModelTests {
    static let directory = try! TemporaryDirectory()
    static let draftPath: String = {
        let path = directory.file("demo-first-2.gguf")
        try! writeFirstLayers(of: try! GGUFFile(path: Repo.demoModel), layers: 2, to: path)
        return path
    }()

    static func backend(_ speculative: SpeculativeSettings?) throws -> LocalBackend {
        let b = try LocalBackend(modelPath: Repo.demoModel, options: .init(threads: 1, slots: 2, contextLength: 512, batch: 32,
                                                                            speculative: speculative))
        b.start()
        return b
    }

    @Test("the cut file keeps the first layers' tensors byte for byte, the head and the vocabulary")
    func firstLayersFile() throws {
        let full = try GGUFFile(path: Repo.demoModel), cut = try GGUFFile(path: Self.draftPath)
        #expect(try LlamaConfig(gguf: cut).layerCount == 2)
        let kept = full.tensors.filter { !$0.name.hasPrefix("blk.") || $0.name.hasPrefix("blk.0.") || $0.name.hasPrefix("blk.1.") }
        #expect(cut.tensors.map(\.name) == kept.map(\.name))
        for t in kept {
            let c = try cut.requireTensor(t.name)
            #expect(c.type == t.type && c.shape == t.shape)
            #expect(Data(cut.data(for: c)) == Data(full.data(for: t)), "\(t.name)")
        }
        #expect(try Vocabulary(gguf: cut).tokens == Vocabulary(gguf: full).tokens)
        for bad in [0, 6, 7, -1] {
            #expect(throws: ModelError.self) { try writeFirstLayers(of: full, layers: bad, to: Self.directory.file("bad.gguf")) }
        }
    }

    @Test("greedy and seeded text with the draft model equal one token per frame; drafts accepted and rejected")
    func equalText() async throws {
        let plain = try Self.backend(nil)
        defer { plain.shutdown() }
        let spec = try Self.backend(SpeculativeSettings(ngram: 0, maxDraft: 5, draftModel: Self.draftPath, draftMinProbability: 0.3))
        defer { spec.shutdown() }
        try await SpeculativeTests.expectSameText(plain, spec, seedBase: 70, maxTokens: 48)
        // Two sequences at once, each with its own slot in the draft model.
        let jobs = SpeculativeTests.prompts.prefix(2).map {
            CompletionJob(promptTokens: plain.tokenize($0, addBOS: true), parameters: .greedy, maxTokens: 40)
        }
        let alone = try await [collect(plain, jobs[0]), collect(plain, jobs[1])].map(\.tokens)
        async let x = collect(spec, jobs[0])
        async let y = collect(spec, jobs[1])
        let together = try await [x, y].map(\.tokens)
        #expect(alone == together)
        try waitUntil("the draft counters", timeout: 5) { spec.counters().draftedTokens > 0 }
        let c = spec.counters()
        #expect(c.acceptedDraftTokens > 0 && c.acceptedDraftTokens < c.draftedTokens,
                "\(c.acceptedDraftTokens) of \(c.draftedTokens) drafted tokens accepted")
    }

    @Test("the whole model drafting for itself: every greedy draft token is accepted")
    func selfDraft() async throws {
        let plain = try Self.backend(nil)
        defer { plain.shutdown() }
        let spec = try Self.backend(SpeculativeSettings(ngram: 0, maxDraft: 6, draftModel: Repo.demoModel, draftMinProbability: 0))
        defer { spec.shutdown() }
        let tokens = plain.tokenize("The os module provides", addBOS: true)
        let job = CompletionJob(promptTokens: tokens, parameters: .greedy, maxTokens: 60)
        let a = try await collect(plain, job), b = try await collect(spec, job)
        #expect(a.tokens == b.tokens)
        try waitUntil("the draft counters", timeout: 5) { spec.counters().draftedTokens > 0 }
        let c = spec.counters()
        // Only a draft running past the end of the text (an end-of-text token) can be cut short.
        #expect(c.draftedTokens >= 40 && c.draftedTokens - c.acceptedDraftTokens <= 6,
                "\(c.acceptedDraftTokens) of \(c.draftedTokens) accepted")
    }

    @Test("a draft model whose vocabulary differs is refused, naming the token")
    func vocabularyMismatch() throws {
        let full = try GGUFFile(path: Self.draftPath)
        let writer = GGUFWriter(alignment: full.alignment)
        for key in full.metadataKeys where key != "general.alignment" {
            var value = full.metadata[key]!
            if key == VocabularyKey.tokens, case .array(let type, var items) = value {
                items[300] = .string("<changed>")
                value = .array(elementType: type, items)
            }
            writer.set(key, value)
        }
        for t in full.tensors { writer.addTensor(name: t.name, type: t.type, shape: t.shape) { $0.copyMemory(from: full.data(for: t)) } }
        let path = Self.directory.file("other-vocab.gguf")
        try writer.write(to: path)
        let target = try Vocabulary(gguf: try GGUFFile(path: Repo.demoModel))
        do {
            _ = try ModelDrafter(path: path, target: target, slots: 1, contextLength: 64)
            Issue.record("a draft model with another vocabulary was accepted")
        } catch {
            #expect("\(error)".contains("token 300"), "\(error)")
        }
        #expect(throws: (any Error).self) {
            try ModelDrafter(path: Self.directory.file("missing.gguf"), target: target, slots: 1, contextLength: 64)
        }
    }
}
