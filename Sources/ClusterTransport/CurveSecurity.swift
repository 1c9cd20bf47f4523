import CZeroMQ
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Keys

/// Why a key could not be used.
public struct SecurityError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A long-term CURVE key pair (Curve25519), both halves in Z85 text (40 characters).
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    /// Whether libzmq was built with CURVE (it needs libsodium).
    public static var isAvailable: Bool { zmq_has("curve") != 0 }

    /// A fresh random key pair.
    public static func generate() throws -> CurveKeyPair {
        guard isAvailable else { throw SecurityError("this libzmq has no CURVE support (built without libsodium)") }
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError(function: "zmq_curve_keypair") }
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    private init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// The pair of a secret key (the public half is derived from it).
    /// - Throws: ``SecurityError`` when `secretKey` is not a Z85 key.
    public init(secretKey: String) throws {
        guard Self.isValidKey(secretKey) else { throw SecurityError("not a Z85 CURVE key (40 characters of the Z85 alphabet)") }
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secretKey) == 0 else { throw SecurityError("the secret key is not usable: \(ZMQError(function: "zmq_curve_public"))") }
        self.init(publicKey: String(cString: pub), secretKey: secretKey)
    }

    /// A routing-id tag only the holder of this secret key can compute: the first 12 bytes,
    /// in hex, of the public key of a second secret derived from this one (each byte XOR
    /// 0x36; X25519 takes any 32 bytes). A worker's control routing id is `name@tag`, so a
    /// peer with another listed key cannot take over its connection on the coordinator's
    /// ROUTER (which hands a routing id over to the newest connection that uses it), while
    /// the worker itself, restarting with its key, takes its old connection over at once.
    public var routingTag: String {
        var secret = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&secret, secretKey) != nil else { return "" }
        for i in secret.indices { secret[i] ^= 0x36 }
        var z85 = [CChar](repeating: 0, count: 41), pub = [CChar](repeating: 0, count: 41)
        guard zmq_z85_encode(&z85, secret, 32) != nil, zmq_curve_public(&pub, z85) == 0 else { return "" }
        var bytes = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&bytes, pub) != nil else { return "" }
        return bytes.prefix(12).map { String(format: "%02x", $0) }.joined()
    }

    private static let z85Alphabet = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)

    /// Whether `key` is 40 characters of the Z85 alphabet that decode to 32 bytes.
    public static func isValidKey(_ key: String) -> Bool {
        let bytes = Array(key.utf8)
        guard bytes.count == 40, bytes.allSatisfy({ z85Alphabet.contains($0) }) else { return false }
        var decoded = [UInt8](repeating: 0, count: 32)
        return zmq_z85_decode(&decoded, key) != nil
    }

    // MARK: Files

    /// Writes `path.key` (the secret key, mode 0600) and `path.pub` (the public key on one line).
    public func write(to path: String) throws {
        try Self.writeFile(path + ".key", "# LlamaCluster CURVE secret key: keep it private.\n\(secretKey)\n", mode: 0o600)
        try Self.writeFile(path + ".pub", publicKey + "\n", mode: 0o644)
    }

    private static func writeFile(_ path: String, _ text: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
        guard fd >= 0 else { throw SecurityError("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fchmod(fd, mode) == 0 else { throw SecurityError("cannot set the mode of \(path): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw SecurityError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Reads a secret key file written by ``write(to:)``. Refuses a file that others can read
    /// (its mode must give nothing to group or others), a missing file and a malformed key,
    /// each with an error naming the file.
    public static func load(secretKeyFile path: String) throws -> CurveKeyPair {
        var info = stat()
        guard stat(path, &info) == 0 else { throw SecurityError("secret key file \(path): \(String(cString: strerror(errno)))") }
        guard info.st_mode & 0o077 == 0 else {
            throw SecurityError("secret key file \(path) is readable by others (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600 \(path)")
        }
        let text = try readText(path, what: "secret key file")
        guard let line = keyLine(text) else { throw SecurityError("secret key file \(path) holds no key line") }
        do {
            return try CurveKeyPair(secretKey: line)
        } catch let e as SecurityError {
            throw SecurityError("secret key file \(path): \(e.description)")
        }
    }

    /// A public key given as Z85 text or as the path of a `.pub` file.
    public static func publicKey(fileOrZ85 value: String) throws -> String {
        if isValidKey(value) { return value }
        let text = try readText(value, what: "public key file")
        guard let line = keyLine(text), isValidKey(line) else {
            throw SecurityError("\(value) is neither a Z85 public key nor a file holding one")
        }
        return line
    }

    private static func readText(_ path: String, what: String) throws -> String {
        guard let f = fopen(path, "r") else { throw SecurityError("\(what) \(path): \(String(cString: strerror(errno)))") }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            bytes += buffer[0..<n]
            guard bytes.count <= 64 * 1024 else { throw SecurityError("\(what) \(path) is too large to be a key file") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The first line that is not blank or a comment, trimmed.
    private static func keyLine(_ text: String) -> String? {
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            return line
        }
        return nil
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

// MARK: - ZAP

/// The ZAP handler (RFC 27) of one ZeroMQ context: every CURVE handshake on a server socket
/// of the context is put to it, and it lets in only the public keys allowed for the socket's
/// domain. The accepted key becomes the messages' `User-Id`. A refused peer never gets past
/// the handshake: it sends and receives nothing.
public final class ZAPHandler: Sendable {
    /// A refused handshake: the socket's domain, the peer's address and the key it offered.
    public struct Refusal: Sendable, Equatable {
        public var domain: String
        public var address: String
        public var key: String
    }

    private let allowed = Mutex<[String: Set<String>]>([:])
    private let refusals = Mutex<[Refusal]>([])
    private let stopping = Atomic<Bool>(false)
    private let finished = Mutex<Bool>(false)
    private let onRefusal: @Sendable (Refusal) -> Void

    /// Starts the handler on `context` (it binds `inproc://zeromq.zap.01`); it answers until
    /// ``stop()``.
    public init(context: ZMQContext, onRefusal: @escaping @Sendable (Refusal) -> Void = { _ in }) throws {
        self.onRefusal = onRefusal
        let socket = try context.socket(.rep)
        try socket.bind("inproc://zeromq.zap.01")
        let box = UncheckedSocket(socket)
        let t = Thread { [self] in serve(box.socket) }
        t.name = "zap"
        t.start()
    }

    /// Lets in exactly `keys` on sockets of `domain` from now on.
    public func allow(_ keys: Set<String>, domain: String) {
        allowed.withLock { $0[domain] = keys }
    }

    /// The refusals so far (for tests and metrics).
    public var refused: [Refusal] { refusals.withLock { $0 } }

    /// Stops answering and closes the handler's socket (before the context is terminated).
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        while !finished.withLock({ $0 }) { usleep(1000) }
    }

    private func serve(_ socket: ZMQSocket) {
        var parts: [[UInt8]] = []
        while !stopping.load(ordering: .relaxed) {
            do {
                guard try socket.receive(into: &parts, timeout: .milliseconds(100)) else { continue }
                try socket.send(reply(parts))
            } catch {
                if stopping.load(ordering: .relaxed) { break }
                usleep(10_000)
            }
        }
        finished.withLock { $0 = true }
        _ = socket  // closed when the closure's last reference goes
    }

    /// The reply to one request: version, request id, status, text, user id, metadata.
    private func reply(_ parts: [[UInt8]]) -> [[UInt8]] {
        guard parts.count >= 6, parts[0] == Array("1.0".utf8) else {
            return [Array("1.0".utf8), parts.count > 1 ? parts[1] : [], Array("500".utf8), Array("malformed ZAP request".utf8), [], []]
        }
        let requestID = parts[1]
        let domain = String(decoding: parts[2], as: UTF8.self)
        let address = String(decoding: parts[3], as: UTF8.self)
        let mechanism = String(decoding: parts[5], as: UTF8.self)
        func refuse(_ key: String, _ why: String) -> [[UInt8]] {
            let r = Refusal(domain: domain, address: address, key: key)
            refusals.withLock { $0.append(r); if $0.count > 1000 { $0.removeFirst(500) } }
            onRefusal(r)
            return [Array("1.0".utf8), requestID, Array("400".utf8), Array(why.utf8), [], []]
        }
        guard mechanism == "CURVE", parts.count >= 7, parts[6].count == 32 else {
            return refuse("", "only CURVE is accepted")
        }
        var z85 = [CChar](repeating: 0, count: 41)
        _ = parts[6].withUnsafeBufferPointer { zmq_z85_encode(&z85, $0.baseAddress, 32) }
        let key = String(cString: z85)
        let ok = allowed.withLock { $0[domain]?.contains(key) ?? false }
        guard ok else { return refuse(key, "key not allowed") }
        return [Array("1.0".utf8), requestID, Array("200".utf8), Array("OK".utf8), Array(key.utf8), []]
    }
}

/// Moves a socket into the handler's thread (it is used there only).
private struct UncheckedSocket: @unchecked Sendable {
    // @unchecked: the socket is handed to one thread and used only there.
    let socket: ZMQSocket
    init(_ socket: ZMQSocket) { self.socket = socket }
}
