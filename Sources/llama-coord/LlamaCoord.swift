import ArgumentParser

@main
struct LlamaCoord: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llama-coord",
        abstract: "LlamaCluster coordinator: Llama 2 inference on CPUs, sharded by layer across hosts.",
        subcommands: [Inspect.self, Tokenize.self, Run.self, Logits.self, Perplexity.self, Synth.self])
}
