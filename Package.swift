// swift-tools-version:6.0
import PackageDescription

// Compile the hot numeric code with full optimisation even in debug builds, so
// the test suite exercises real kernels at a usable speed.
let fastC: [CSetting] = [.unsafeFlags(["-O3"])]

let log = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "CoreMetrics", package: "swift-metrics")

/// The registry, the pipeline and the serving core are state machines that their tests drive
/// through internal API (`@testable import`), also in the release build the suite runs in.
/// Neither module holds a hot loop, so exporting internal symbols costs nothing measurable.
let testable: [SwiftSetting] = [.unsafeFlags(["-enable-testing"])]

let package = Package(
    name: "LlamaCluster",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "llama-coord", targets: ["llama-coord"]),
        .executable(name: "llama-worker", targets: ["llama-worker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.27.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.25.0"),
    ],
    targets: [
        // MARK: - Model file format
        .target(name: "GGUF"),

        // MARK: - Math kernels (C SIMD core + Swift driver); also the one f16 converter and CPU probe
        .target(name: "CLlamaKernels", cSettings: fastC),
        .target(name: "LlamaKernels", dependencies: ["CLlamaKernels", "GGUF"]),

        // MARK: - Tokenizer, sampling, grammars
        .target(name: "LlamaTokenizer", dependencies: ["GGUF"]),
        .target(name: "LlamaSampling"),
        .target(name: "LlamaGrammar"),

        // MARK: - The transformer: weights, layers, KV cache, head (what a worker runs)
        .target(name: "LlamaModel", dependencies: ["GGUF", "LlamaKernels"]),

        // MARK: - Serving: jobs, generation state, the scheduler, the backend protocol, one process
        .target(name: "LlamaInference", dependencies: [
            "GGUF", "LlamaKernels", "LlamaModel", "LlamaTokenizer", "LlamaSampling", "LlamaGrammar", log, metrics,
            .product(name: "DequeModule", package: "swift-collections"),
        ], swiftSettings: testable),

        // MARK: - HTTP endpoint (OpenAI / llama-server compatible)
        .target(name: "LlamaServer", dependencies: [
            "LlamaInference", "LlamaSampling", "LlamaGrammar", log, metrics,
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // Client of that endpoint (AsyncHTTPClient and a server-sent-events line splitter).
        .target(name: "LlamaClient", dependencies: [
            "LlamaSampling",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),

        // MARK: - Cluster wire format and transport (only these touch protobuf-c and ZeroMQ)
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .target(name: "CClusterWire", dependencies: ["CProtobufC", "CLlamaKernels"], cSettings: fastC),
        .target(name: "ClusterWire", dependencies: ["CClusterWire", "CLlamaKernels"]),
        .target(name: "ClusterTransport", dependencies: ["CZeroMQ", log]),

        // MARK: - Cluster roles
        .target(name: "LlamaWorker", dependencies: [
            "ClusterWire", "ClusterTransport", "GGUF", "LlamaKernels", "LlamaModel", log,
        ]),
        .target(name: "LlamaCoordinator", dependencies: [
            "ClusterWire", "ClusterTransport", "GGUF", "LlamaKernels", "LlamaModel", "LlamaInference",
            "LlamaTokenizer", "LlamaSampling", log, metrics,
            .product(name: "Yams", package: "Yams"),
        ], swiftSettings: testable),

        // MARK: - Executables
        .executableTarget(name: "llama-coord", dependencies: [
            "GGUF", "ClusterWire", "LlamaKernels", "LlamaModel", "LlamaInference", "LlamaCoordinator", "LlamaServer",
            "LlamaClient", "LlamaSampling", "LlamaTokenizer", "LlamaGrammar", "ClusterTransport", log, metrics,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "llama-worker", dependencies: [
            "LlamaWorker", "ClusterTransport", "LlamaKernels", log,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // MARK: - Test support: fixtures, repository paths, a seeded RNG, in-process clusters
        .target(name: "TestSupport", dependencies: [
            "GGUF", "LlamaModel", "LlamaInference", "LlamaCoordinator", "LlamaWorker", "ClusterTransport",
            "ClusterWire", "LlamaSampling", "LlamaTokenizer", log,
        ], path: "Tests/TestSupport"),

        // MARK: - Tests
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "LlamaKernels", "LlamaModel", "TestSupport"]),
        .testTarget(name: "LlamaKernelsTests", dependencies: ["LlamaKernels", "CLlamaKernels", "GGUF", "TestSupport"]),
        .testTarget(name: "LlamaTokenizerTests", dependencies: ["LlamaTokenizer", "GGUF", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "LlamaSamplingTests", dependencies: ["LlamaSampling", "TestSupport"]),
        .testTarget(name: "LlamaGrammarTests", dependencies: ["LlamaGrammar", "LlamaTokenizer", "GGUF", "TestSupport"]),
        .testTarget(name: "LlamaModelTests", dependencies: ["LlamaModel", "LlamaKernels", "LlamaTokenizer", "LlamaSampling", "GGUF", "TestSupport"]),
        .testTarget(name: "LlamaInferenceTests", dependencies: [
            "LlamaInference", "LlamaModel", "LlamaSampling", "LlamaTokenizer", "LlamaGrammar", "GGUF", "TestSupport",
        ]),
        .testTarget(name: "LlamaServerTests", dependencies: [
            "LlamaServer", "LlamaInference", "LlamaSampling", "LlamaTokenizer", "LlamaModel", "LlamaCoordinator", "GGUF",
            "LlamaClient", "TestSupport", metrics,
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "LlamaClientTests", dependencies: [
            "LlamaClient", "LlamaServer", "LlamaInference", "LlamaSampling", "TestSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        .testTarget(name: "ClusterWireTests", dependencies: ["ClusterWire", "TestSupport"]),
        .testTarget(name: "ClusterTransportTests", dependencies: ["ClusterTransport", "ClusterWire", "TestSupport"]),
        .testTarget(name: "LlamaClusterTests", dependencies: [
            "LlamaCoordinator", "LlamaWorker", "ClusterTransport", "ClusterWire", "LlamaModel", "LlamaInference",
            "LlamaServer", "LlamaSampling", "LlamaClient", "LlamaTokenizer", "GGUF", "TestSupport", log,
            "llama-coord", "llama-worker",
        ]),
    ]
)

// MARK: - Fuzzing harnesses (only with LLAMA_FUZZ=1; see scripts/fuzz.sh)
// libFuzzer entry points under Tests/Fuzz/<name>, built with
// `-Xswiftc -sanitize=fuzzer,address`. Without LLAMA_FUZZ=1 nothing here exists, so ordinary
// builds and tests never see these targets. With it, the C targets the harnesses reach are
// also compiled with AddressSanitizer and coverage instrumentation.
if Context.environment["LLAMA_FUZZ"] == "1" {
    let harness: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
    func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
        .executableTarget(name: "fuzz-\(name)", dependencies: ["FuzzDriver"] + dependencies,
                          path: "Tests/Fuzz/\(name)", swiftSettings: harness)
    }
    package.targets += [
        .target(name: "FuzzDriver", path: "Tests/Fuzz/FuzzDriver"),
        fuzzTarget("wire-activation", ["ClusterWire"]),
        fuzzTarget("wire-control", ["ClusterWire"]),
        fuzzTarget("gguf", ["GGUF", "LlamaModel", "LlamaTokenizer"]),
        fuzzTarget("manifest", ["LlamaCoordinator"]),
        fuzzTarget("http-request", ["LlamaServer", "LlamaInference"]),
        fuzzTarget("tokenizer", ["LlamaTokenizer", "GGUF"]),
        fuzzTarget("grammar", ["LlamaGrammar"]),
    ]
    for target in package.targets where ["CClusterWire", "CLlamaKernels"].contains(target.name) {
        target.cSettings = (target.cSettings ?? []) + [.unsafeFlags(["-fsanitize=address,fuzzer-no-link"])]
    }
}
