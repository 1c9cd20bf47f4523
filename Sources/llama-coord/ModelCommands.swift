import ArgumentParser
import Foundation
import GGUF
import LlamaInference
import LlamaKernels
import LlamaModel
import LlamaSampling
import LlamaTokenizer

// MARK: - inspect

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a GGUF file's metadata and tensor table.")

    @Option(help: "GGUF model file.") var model: String

    func run() throws {
        let file = try GGUFFile(path: model)
        print("file: \(model)")
        print("GGUF version \(file.version), \(file.metadata.count) metadata keys, \(file.tensors.count) tensors, alignment \(file.alignment), \(formatBytes(file.fileSize))")
        print("\nmetadata:")
        for key in file.metadataKeys {
            print("  \(key) = \(file.metadata[key]!)")
        }
        if let config = try? LlamaConfig(gguf: file) {
            print("\nconfiguration: \(config.layerCount) layers, width \(config.dim), FFN \(config.ffnDim), \(config.headCount) heads (\(config.kvHeadCount) KV), head size \(config.headDim), RoPE dims \(config.ropeDim) base \(config.ropeBase), context \(config.contextLength), vocabulary \(config.vocabSize)")
        }
        print("\ntensors:")
        let width = file.tensors.map(\.name.count).max() ?? 4
        print("  " + "name".padding(toLength: width, withPad: " ", startingAt: 0) + "  type   shape                 bytes")
        var total = 0
        for t in file.tensors {
            let shape = t.shape.map(String.init).joined(separator: " x ")
            print("  " + t.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                  + t.type.description.padding(toLength: 5, withPad: " ", startingAt: 0) + "  "
                  + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + "  \(t.byteCount)")
            total += t.byteCount
        }
        print("  total tensor data: \(formatBytes(total))")
    }
}

// MARK: - tokenize

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids (with BOS) of a text.")

    @Option(help: "GGUF model or vocabulary file.") var model: String
    @Flag(help: "Do not add BOS.") var noBos = false
    @Argument(help: "The text.") var text: String

    func run() throws {
        let file = try GGUFFile(path: model)
        let tokenizer = LlamaTokenizer(vocabulary: try Vocabulary(gguf: file))
        print(tokenizer.encode(text, addBOS: !noBos).map(String.init).joined(separator: " "))
    }
}

// MARK: - run

struct SamplingOptions: ParsableArguments {
    @Option(name: [.customShort("n"), .long], help: "Tokens to generate.") var maxTokens = 128
    @Option(help: "Temperature (0 = greedy).") var temperature: Float = 0.8
    @Option(help: "Top-k (0 = off).") var topK = 40
    @Option(help: "Top-p (1 = off).") var topP: Float = 0.95
    @Option(help: "Min-p (0 = off).") var minP: Float = 0.05
    @Option(help: "Repetition penalty (1 = off, the default as in llama.cpp).") var repeatPenalty: Float = 1.0
    @Option(help: "Tokens the repetition penalty looks back over.") var repeatLastN = 64
    @Option(help: "Random seed (default: random).") var seed: UInt64?

    func parameters() throws -> SamplingParameters {
        guard maxTokens >= 0 else { throw ValidationError("-n must be at least 0") }
        var p = SamplingParameters()
        p.temperature = temperature
        p.topK = topK
        p.topP = topP
        p.minP = minP
        p.repeatPenalty = repeatPenalty
        p.repeatLastN = repeatLastN
        p.seed = seed
        return try p.validated()
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate a completion in this process, streamed to stdout.")

    @Option(help: "GGUF model file.") var model: String
    @Option(help: "The prompt.") var prompt: String
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Context length (default: the model's).") var ctx: Int?
    @Option(name: .customLong("kv-cache"), help: "How the KV cache stores keys and values: f16 (as llama.cpp) or f32.")
    var kvCache: KVCacheType = .f16

    func run() async throws {
        let params = try sampling.parameters()
        // The same scheduler and generation state as `serve` and the cluster, with one slot.
        let backend = try LocalBackend(modelPath: model, options: .init(threads: threads, slots: 1, contextLength: ctx, kvCache: kvCache))
        backend.start()
        defer { backend.shutdown() }
        let tokens = backend.tokenize(prompt, addBOS: true)
        emit(prompt)
        let start = now()
        var first: Double?
        var generated = 0, stoppedAtEOS = false
        do {
            for try await event in try backend.submit(CompletionJob(promptTokens: tokens, parameters: params, maxTokens: sampling.maxTokens)) {
                switch event {
                case let .text(_, text, _):
                    if first == nil { first = now() }
                    emit(text)
                case let .finished(_, reason, n):
                    generated = n
                    stoppedAtEOS = reason == .stop
                case .prompt:
                    break
                }
            }
        } catch {
            throw ValidationError("\(error)")
        }
        emit("\n")
        let end = now(), firstAt = first ?? end
        printErr(String(format: "prompt: %d tokens, first token after %.3f s", tokens.count, firstAt - start))
        printErr(String(format: "generation: %d tokens in %.3f s (%.2f tokens/s after the first)%@", generated, end - start,
                        Double(max(generated - 1, 0)) / max(end - firstAt, 1e-9), stoppedAtEOS ? ", stopped at end of text" : ""))
    }
}

// MARK: - logits

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print JSON {\"tokens\":[...],\"logits\":[...]} for the last position of a prompt.")

    @Option(help: "GGUF model file.") var model: String
    @Option(help: "The prompt.") var prompt: String
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(name: .customLong("kv-cache"), help: "How the KV cache stores keys and values: f16 (as llama.cpp) or f32.")
    var kvCache: KVCacheType = .f16
    @Option(help: "Keep Q4_0 and Q8_0 weights repacked for the AVX2 product in this directory (made once, then mapped).")
    var repackDir: String?

    func run() throws {
        if let repackDir { try RepackedWeights.enable(directory: repackDir) }
        let engine = try LlamaEngine(path: model, threads: threads, kvCache: kvCache)
        let tokens = try loadTokenizer(engine.file).encode(prompt, addBOS: true)
        let logits = try engine.evaluate(tokens, startPosition: 0, logits: .last)
        var out = "{\"tokens\":[" + tokens.map(String.init).joined(separator: ",") + "],\"logits\":["
        out += logits.map { $0.isFinite ? "\($0)" : "null" }.joined(separator: ",")
        out += "]}"
        print(out)
    }
}

// MARK: - perplexity

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Perplexity of a text file, as llama.cpp's perplexity tool computes it.")

    @Option(help: "GGUF model file.") var model: String
    @Option(help: "Text file.") var file: String
    @Option(help: "Chunk length in tokens.") var ctx = 512
    @Option(help: "Stop after this many chunks.") var chunks: Int?
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(name: .customLong("kv-cache"), help: "How the KV cache stores keys and values: f16 (as llama.cpp) or f32.")
    var kvCache: KVCacheType = .f16

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
        guard let text = String(data: data, encoding: .utf8) else { throw ValidationError("\(file) is not UTF-8 text") }
        let engine = try LlamaEngine(path: model, threads: threads, contextLength: ctx, maxBatch: ctx, kvCache: kvCache)
        let tokens = try loadTokenizer(engine.file).encode(text, addBOS: true)
        printErr("\(tokens.count) tokens, \(tokens.count / ctx) chunks of \(ctx)")
        let start = now()
        let result = try engine.perplexity(tokens: tokens, context: ctx, maxChunks: chunks) { i, n, r in
            printErr(String(format: "[%d/%d] %.4f", i + 1, n, r.perplexity), terminator: i + 1 == n ? "\n" : "  ")
        }
        let seconds = now() - start
        printErr(String(format: "%d tokens scored in %.1f s (%.1f tokens/s evaluated)", result.scoredTokens, seconds,
                        Double(result.chunks * ctx) / seconds))
        print(String(format: "PPL = %.4f", result.perplexity))
    }
}

// MARK: - first-layers

struct FirstLayers: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "first-layers",
        abstract: "Write a model cut to its first layers: a draft model with the same vocabulary (--draft-model).")

    @Option(help: "GGUF model file.") var model: String
    @Option(help: "Layers to keep, from the first.") var layers: Int
    @Option(help: "Output GGUF file.") var out: String

    func run() throws {
        guard out != model else { throw ValidationError("--out must differ from --model") }
        try writeFirstLayers(of: try GGUFFile(path: model), layers: layers, to: out)
        print("wrote \(out): the first \(layers) layers of \(model)")
    }
}

// MARK: - synth

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a random-weight Llama GGUF of any shape with a real vocabulary.")

    @Option(help: "Output GGUF file.") var out: String
    @Option(help: "Vocabulary GGUF (its tokenizer is copied).") var vocab: String
    @Option(help: "Shape preset: \(SyntheticModel.Preset.allCases.map(\.rawValue).joined(separator: ", ")).") var preset: String?
    @Option(help: "Width.") var dim: Int?
    @Option(help: "Layers.") var layers: Int?
    @Option(help: "Query heads.") var heads: Int?
    @Option(help: "Key/value heads (default: heads).") var kvHeads: Int?
    @Option(help: "Feed-forward width.") var ffn: Int?
    @Option(help: "Context length.") var ctx: Int?
    @Option(help: "Weight type: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k.") var type = "f32"
    @Option(help: "Embedding and output head type (default: --type).") var embeddingType: String?
    @Option(help: "Random seed.") var seed: UInt64 = 1

    static func parseType(_ s: String) throws -> GGMLType {
        guard let t = GGMLType.allCases.first(where: { $0.description.lowercased() == s.lowercased() }), t.isSupported else {
            throw ValidationError("unknown weight type \(s.debugDescription) (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)")
        }
        return t
    }

    func run() throws {
        let type = try Self.parseType(type)
        var model: SyntheticModel
        if let name = preset {
            guard let p = SyntheticModel.Preset(rawValue: name.lowercased()) else {
                throw ValidationError("unknown preset \(name.debugDescription) (\(SyntheticModel.Preset.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            model = SyntheticModel(preset: p, layers: layers ?? p.shape.layers, context: ctx ?? 4096, type: type, seed: seed)
        } else {
            model = SyntheticModel(dim: dim ?? 256, layers: layers ?? 2, heads: heads ?? 4, kvHeads: kvHeads, ffn: ffn,
                                   context: ctx ?? 512, type: type, seed: seed)
        }
        if preset != nil {
            if let d = dim { model.dim = d }
            if let h = heads { model.heads = h }
            if let kv = kvHeads { model.kvHeads = kv }
            if let f = ffn { model.ffn = f }
        }
        if let e = embeddingType { model.embeddingType = try Self.parseType(e) }
        let vocabFile = try GGUFFile(path: vocab)
        let pool = ThreadPool(threadCount: defaultThreadCount)
        let start = now()
        try model.write(to: out, vocab: vocabFile, pool: pool) { done, total in
            printErr("\rwriting tensors: \(done)/\(total)", terminator: done == total ? "\n" : "")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        printErr(String(format: "wrote %@ (%@) in %.1f s", out, formatBytes(size), now() - start))
    }
}

extension KVCacheType: ExpressibleByArgument {}
