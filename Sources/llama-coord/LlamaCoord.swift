import ArgumentParser

@main
struct LlamaCoord: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llama-coord",
        abstract: "LlamaCluster coordinator: Llama 2 inference on CPUs, sharded by layer across hosts.",
        subcommands: [Start.self, Serve.self, Keygen.self, Prompt.self, Status.self, Run.self, Inspect.self, Tokenize.self, Logits.self, Perplexity.self, Synth.self, FirstLayers.self, Bench.self, BenchServing.self, Plan.self])
}
