import Foundation
import Hummingbird
import HummingbirdTesting
import LlamaServer
import NIOCore
import Testing

/// Runs blocking client code on a thread of its own, so that neither the server's tasks nor
/// the test's task wait for it on a cooperative thread. Expectations stay in the calling task
/// (where Swift Testing attributes them to the test); the work only returns values or throws.
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// Starts the endpoint over `backend` on a free loopback port and runs `body` with its base URL
/// (`http://127.0.0.1:PORT`, or `https://` when `options` has TLS).
func withLiveServer(_ backend: WordBackend,
                    options: LlamaHTTPServer.Options = LlamaHTTPServer.Options(streamKeepAliveInterval: 0.05),
                    _ body: @Sendable (String) async throws -> Void) async throws
{
    let app = try LlamaHTTPServer(backend: backend, host: "127.0.0.1", port: 0, options: options).makeApplication()
    let scheme = options.tls == nil ? "http" : "https"
    try await app.test(.live) { client in
        let port = try #require(client.port)
        try await body("\(scheme)://127.0.0.1:\(port)")
    }
}

/// Starts a bare HTTP server whose routes `addRoutes` sets up (a server that misbehaves in
/// ways the real endpoint does not) and runs `body` with its base URL.
func withScriptedServer(_ addRoutes: (Router<BasicRequestContext>) -> Void,
                        _ body: @Sendable (String) async throws -> Void) async throws
{
    let router = Router()
    addRoutes(router)
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    try await app.test(.live) { client in
        let port = try #require(client.port)
        try await body("http://127.0.0.1:\(port)")
    }
}

/// A response with `text` as its whole body.
func scriptedResponse(_ text: String, status: HTTPResponse.Status = .ok,
                      contentType: String = "text/event-stream") -> Response
{
    Response(status: status, headers: [.contentType: contentType],
             body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
}

/// Collects streamed text from callbacks that may run on another thread.
///
/// `@unchecked Sendable`: `collected` is read and written only while holding `lock`.
final class TextCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [String] = []

    func append(_ piece: String) { lock.withLock { collected.append(piece) } }
    var pieces: [String] { lock.withLock { collected } }
}

/// Threads of this process; nil where there is no `/proc`.
func threadCount() -> Int? {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task"))?.count
}

/// TCP connections from or to loopback port `port` that are still open on this host (state
/// ESTABLISHED or CLOSE_WAIT in `/proc/net/tcp`; closed ones in TIME_WAIT do not count); nil
/// where there is no `/proc`. A port only one test's server listens on makes the count that
/// test's own, whatever other tests run at the same time.
func openConnections(port: Int) -> Int? {
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return nil }
    let hexPort = String(format: ":%04X", port)
    return table.split(separator: "\n").dropFirst().filter { line in
        let fields = line.split(separator: " ")
        guard fields.count > 3 else { return false }
        let (local, remote, state) = (fields[1], fields[2], fields[3])
        return (local.hasSuffix(hexPort) || remote.hasSuffix(hexPort)) && (state == "01" || state == "08")
    }.count
}
