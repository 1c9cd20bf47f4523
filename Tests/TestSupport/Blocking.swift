import Foundation

/// Failures of checks made by work on a thread of its own (Swift Testing attributes an issue
/// to a test only inside the test's task); the test records them once the work is done.
public final class Checks: @unchecked Sendable {
    // @unchecked: `failures` is read and written only while holding `lock`.
    private let lock = NSLock()
    private var failures: [String] = []

    public init() {}

    public func expect(_ condition: Bool, _ message: @autoclosure () -> String = "", fileID: String = #fileID,
                       line: Int = #line) {
        if !condition { fail(message(), fileID: fileID, line: line) }
    }

    public func fail(_ message: String, fileID: String = #fileID, line: Int = #line) {
        lock.withLock { failures.append("\(fileID):\(line): \(message.isEmpty ? "check failed" : message)") }
    }

    public var all: [String] { lock.withLock { failures } }
}

/// Runs blocking work (processes, sockets, waits) on a thread of its own and returns the
/// failures of its checks, and the error it threw, if any. The cooperative threads (as many
/// as cores) stay free meanwhile for the async work of the suites running beside it: blocking
/// them for a long process test starved in-process servers and clusters of other suites.
public func runBlocking(_ work: @escaping @Sendable (Checks) throws -> Void) async -> [String] {
    let checks = Checks()
    return await withCheckedContinuation { continuation in
        let thread = Thread {
            do {
                try work(checks)
            } catch {
                checks.fail("threw: \(error)")
            }
            continuation.resume(returning: checks.all)
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
