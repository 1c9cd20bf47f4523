#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

import ArgumentParser
import Foundation
import LlamaCoordinator

/// Writes to standard error.
func printErr(_ s: String, terminator: String = "\n") {
    FileHandle.standardError.write(Data((s + terminator).utf8))
}

/// Writes to standard output without buffering delay.
func emit(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}

/// Monotonic seconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func formatBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[u])
}

/// The manifest at `path`, its relative paths resolved against its directory.
func loadManifest(_ path: String) throws -> ClusterManifest {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
        throw ValidationError("cannot read the manifest \(path)")
    }
    let base = (path as NSString).deletingLastPathComponent
    return try ClusterManifest.parse(yaml: text, baseDirectory: base.isEmpty ? "." : base)
}
