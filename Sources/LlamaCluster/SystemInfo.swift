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

    /// SIMD features relevant to the kernels, from /proc/cpuinfo, and the kernel path in use.
    public static var cpuFeatures: String {
        var found: [String] = []
        if let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           let flagsLine = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) {
            let flags = Set(flagsLine.split(separator: " ").map(String.init))
            for f in ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "asimd"]
            where flags.contains(f) { found.append(f) }
        }
        return found.joined(separator: " ") + " (kernels: \(KernelISA.best))"
    }

    public static var hostName: String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return String(cString: buf)
    }

    /// The local IP address this host uses to reach `host` (no packet is sent: a UDP socket is
    /// connected and its local address read).
    public static func localAddress(toward host: String, port: UInt16) -> String? {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else { return nil }
        defer { freeaddrinfo(res) }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else { return nil }
        var local = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard ok == 0 else { return nil }
        var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        var addr = local.sin_addr
        guard inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count)) != nil else { return nil }
        return String(cString: buf)
    }
}

/// Splits "tcp://host:port" into its parts.
public func parseTCPEndpoint(_ endpoint: String) -> (host: String, port: UInt16)? {
    guard endpoint.hasPrefix("tcp://") else { return nil }
    let rest = endpoint.dropFirst(6)
    guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
    return (String(rest[..<colon]), port)
}

/// A short fingerprint of a GGUF model: a hash of its header (metadata and tensor table) and its size.
/// Two files with the same fingerprint hold the same tensors at the same places.
public func modelFingerprint(_ file: GGUFFile) -> String {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a
    func mix(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    }
    for key in file.metadataKeys { key.utf8CString.withUnsafeBytes(mix); "\(file.metadata[key]!)".utf8CString.withUnsafeBytes(mix) }
    for t in file.tensors { "\(t.name):\(t.type.rawValue):\(t.shape):\(t.offset)".utf8CString.withUnsafeBytes(mix) }
    withUnsafeBytes(of: UInt64(file.fileSize)) { mix($0) }
    return String(h, radix: 16)
}
