// libFuzzer harness: the cluster manifest as `llama-coord` reads it,
// `ClusterManifest.parse(yaml:baseDirectory:)` (Yams' YAML parser, then every field's checks),
// and for a manifest that parses: the address checks with and without API keys, and the
// layer placement it leads to for a few model sizes (equal shares, shares by memory, and the
// balanced split by measured speed within memory). A placement that succeeds must give every
// stage a non-empty range and cover the model's layers once, in pipeline order. Any input
// may be rejected with an error.

import FuzzDriver
import LlamaCoordinator

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let manifest = try? ClusterManifest.parse(yaml: text, baseDirectory: "/base") else { return 0 }
    _ = try? manifest.checkBindings(hasAPIKeys: true)
    _ = try? manifest.checkBindings(hasAPIKeys: false)
    _ = manifest.runsInsecurely
    var memory: [String: Int] = [:]
    var speed: [String: StageSpeed] = [:]
    for (i, worker) in manifest.workers.enumerated() {
        memory[worker.name] = (i % 3 + 1) << 30
        speed[worker.name] = StageSpeed(secondsPerLayer: 0.001 * Double(i % 4 + 1))
    }
    for layers in [1, 3, 32, 80] {
        for placement in [try? manifest.assignLayers(layerCount: layers),
                          try? manifest.assignLayers(layerCount: layers, memory: memory, layerBytes: 100 << 20),
                          try? manifest.assignLayers(layerCount: layers, memory: memory, speed: speed,
                                                     layerBytes: 400 << 20)] {
            guard let placement else { continue }
            var next = 0
            for stage in manifest.stages {
                guard let range = placement[stage.name] else { preconditionFailure("stage \(stage.name) has no layers") }
                precondition(!range.isEmpty && range.lowerBound == next, "stage \(stage.name) has layers \(range), expected from \(next)")
                next = range.upperBound
            }
            precondition(next == layers, "the stages hold layers 0..<\(next) of \(layers)")
        }
    }
    return 0
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_manifest_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
