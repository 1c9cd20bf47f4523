// swift-tools-version:6.0
import PackageDescription

// Compile the hot numeric code with full optimisation even in debug builds, so
// the test suite exercises real kernels at a usable speed.
let fastC: [CSetting] = [.unsafeFlags(["-O3"])]

let package = Package(
    name: "LlamaCluster",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "llama-coord", targets: ["llama-coord"]),
        .executable(name: "llama-worker", targets: ["llama-worker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    ],
    targets: [
        // MARK: - Model file format
        .target(name: "GGUF"),

        // MARK: - Math kernels (C SIMD core + Swift driver)
        .target(name: "CLlamaKernels", cSettings: fastC),
        .target(name: "LlamaKernels", dependencies: ["CLlamaKernels", "GGUF"]),

        // MARK: - Tokenizer and sampling
        .target(name: "LlamaTokenizer", dependencies: ["GGUF"]),
        .target(name: "LlamaSampling"),

        // MARK: - The transformer
        .target(name: "LlamaModel", dependencies: ["GGUF", "LlamaKernels", "LlamaTokenizer", "LlamaSampling"]),

        // MARK: - HTTP endpoint (OpenAI-compatible)
        .target(name: "LlamaServer", dependencies: [
            "LlamaSampling",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Small blocking HTTP/1.1 client of that endpoint (POSIX sockets, no extra package).
        .target(name: "LlamaClient", dependencies: ["LlamaSampling"]),

        // MARK: - Cluster wire format and transport
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .target(name: "CClusterWire", dependencies: ["CProtobufC"], cSettings: fastC),
        .target(name: "ClusterWire", dependencies: ["CClusterWire"]),
        .target(name: "ClusterTransport", dependencies: ["CZeroMQ"]),

        // MARK: - Cluster roles: manifest, coordinator, worker
        .target(name: "LlamaCluster", dependencies: [
            "ClusterWire", "ClusterTransport", "LlamaModel", "LlamaServer",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // MARK: - Executables
        .executableTarget(name: "llama-coord", dependencies: [
            "LlamaModel", "LlamaCluster", "LlamaServer", "LlamaClient",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "llama-worker", dependencies: [
            "LlamaCluster",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: - Tests
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "LlamaKernels", "LlamaModel"]),
        .testTarget(name: "LlamaKernelsTests", dependencies: ["LlamaKernels", "CLlamaKernels", "GGUF"]),
        .testTarget(name: "LlamaTokenizerTests", dependencies: ["LlamaTokenizer", "GGUF"], resources: [.copy("Fixtures")]),
        .testTarget(name: "LlamaSamplingTests", dependencies: ["LlamaSampling"]),
        .testTarget(name: "LlamaModelTests", dependencies: ["LlamaModel", "GGUF"]),
        .testTarget(name: "LlamaServerTests", dependencies: [
            "LlamaServer", "LlamaSampling",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "LlamaClientTests", dependencies: [
            "LlamaClient", "LlamaServer", "LlamaSampling",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "ClusterWireTests", dependencies: ["ClusterWire"]),
        .testTarget(name: "ClusterTransportTests", dependencies: ["ClusterTransport", "ClusterWire"]),
        .testTarget(name: "LlamaClusterTests", dependencies: [
            "LlamaCluster", "ClusterTransport", "ClusterWire", "LlamaModel", "LlamaServer", "LlamaSampling",
            "LlamaClient", "LlamaTokenizer", "GGUF", "llama-coord", "llama-worker",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
