#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import GGUF
import LlamaKernels

/// Facts about this host that a worker reports when it joins.
public enum SystemInfo {
    /// Bytes of memory available for new allocations (`MemAvailable` in /proc/meminfo).
    public static var availableMemory: Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }

    /// Resident memory of this process in bytes (`VmRSS`).
    public static var residentMemory: Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }

    /// SIMD features relevant to the kernels (the kernels' own probe) and the kernel path in use.
    public static var cpuFeatures: String { "\(KernelISA.cpuFeatures) (kernels: \(KernelISA.best))" }

    public static var hostName: String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return String(cString: buf)
    }
}
