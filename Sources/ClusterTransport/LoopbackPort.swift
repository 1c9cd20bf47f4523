#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Free TCP ports on the loopback interface, for tests and local clusters.
public enum LoopbackPort {
    /// A TCP port on 127.0.0.1 that was free a moment ago: the kernel picks it for a socket
    /// bound to port 0, which is then closed.
    ///
    /// Another process may take the port before it is used; where the code binds the port
    /// itself, binding `tcp://127.0.0.1:*` and reading ``ZMQSocket/lastEndpoint`` avoids the race.
    public static func pickFree() throws -> UInt16 {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        if fd < 0 { throw ZMQError(function: "socket", errno: errno) }
        defer { close(fd) }

        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if bound != 0 { throw ZMQError(function: "bind", errno: errno, detail: "127.0.0.1:0") }

        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getsockname(fd, $0, &length)
            }
        }
        if named != 0 { throw ZMQError(function: "getsockname", errno: errno) }
        return UInt16(bigEndian: address.sin_port)
    }

    /// `tcp://127.0.0.1:<port>` for a free port (see ``pickFree()``).
    public static func freeEndpoint() throws -> String {
        "tcp://127.0.0.1:\(try pickFree())"
    }
}
