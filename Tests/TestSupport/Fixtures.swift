import Foundation

/// Paths of the repository and the files tests use.
public enum Repo {
    public static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let vocab = root.appendingPathComponent("Tests/LlamaTokenizerTests/Fixtures/ggml-vocab-llama-spm.gguf").path
    public static let demoModel = root.appendingPathComponent("models/demo/llama-cluster-demo.q8_0.gguf").path
    public static let heldout = root.appendingPathComponent("models/demo/heldout.txt").path
    public static let reference = root.appendingPathComponent("Tests/Reference/llama_ref.py").path
    public static let modelFixtures = root.appendingPathComponent("Tests/LlamaModelTests/Fixtures")
    public static let oracle = root.appendingPathComponent("scripts/llamacpp_oracle.py").path

    /// Directory holding the built executables (beside the test bundle).
    public static var binDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }
}

/// SplitMix64: a small seeded generator so every test run sees the same data.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A scratch directory removed when the value is released.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init() throws {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("llamacluster-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        path = p
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func file(_ name: String) -> String { path + "/" + name }
}

/// A failure of something a test waited for.
public struct Timeout: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

public struct ProcessFailure: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// Runs a program and returns its standard output; throws with its standard error on failure.
public func runProcess(_ executable: String, _ arguments: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read both pipes before waiting so a large output cannot block the child.
    let errBox = DataBox()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw ProcessFailure(description: "\(executable) \(arguments.joined(separator: " ")) exited with \(p.terminationStatus): \(String(decoding: errBox.data, as: UTF8.self))")
    }
    return String(decoding: outData, as: UTF8.self)
}

private final class DataBox: @unchecked Sendable {
    // @unchecked: written by one thread before the DispatchGroup wait, read after it.
    var data = Data()
}

/// The Python interpreter with numpy and gguf: $LLAMA_REF_PYTHON, else python3 on PATH.
public var referencePython: String {
    if let p = ProcessInfo.processInfo.environment["LLAMA_REF_PYTHON"], !p.isEmpty { return p }
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let candidate = "\(dir)/python3"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return "/usr/bin/python3"
}

/// The log level tests run with ($LLAMA_TEST_LOG, default warning).
public var testLogLevel: String { ProcessInfo.processInfo.environment["LLAMA_TEST_LOG"] ?? "warning" }

/// Polls `condition` every 10 ms for up to `timeout` seconds.
public func waitUntil(_ what: String, timeout: Double = 30, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return }
        usleep(10_000)
    }
    throw Timeout(description: "\(what) did not happen within \(timeout) s")
}

extension SeededGenerator {
    public mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }

    /// Uniform in [0, 1).
    public mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// Uniform in [lo, hi).
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * unit() }

    /// Approximately standard normal (sum of uniforms).
    public mutating func gaussian() -> Float {
        var sum: Float = 0
        for _ in 0..<6 { sum += unit() }
        return (sum - 3) * 1.414
    }

    public mutating func floats(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in gaussian() * scale }
    }
}
