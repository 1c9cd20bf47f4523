import ClusterTransport
import Foundation
import LlamaClient
import Synchronization
import TestSupport
import Testing

/// Many clients, each keeping one HTTP/1.1 connection for every request it makes, against the
/// real endpoint (`llama-coord serve` on the demo model, its own process, so that the rest of
/// the suite running beside it cannot starve the server's threads) on a loopback port: a
/// request that reaches the server is answered, always, and the server closes a connection
/// only after saying so.
@Suite("Keep-alive connections under load", .serialized, .timeLimit(.minutes(3)))
struct KeepAliveLoadTests {
    struct Tally: Sendable {
        var requests = 0
        var answered = 0
        var cancelled = 0
        var failures: [String: Int] = [:]
        var connections = 0
        var announcedCloses = 0
    }

    /// Runs `clients` threads for `seconds`: each posts completions on its one connection,
    /// every fifth one streamed and every fifteenth of those hung up on after its first chunk.
    static func load(port: Int, clients: Int, seconds: Double) -> Tally {
        let tally = Mutex(Tally())
        let group = DispatchGroup()
        let deadline = Date().addingTimeInterval(seconds)
        for c in 0..<clients {
            group.enter()
            Thread {
                defer { group.leave() }
                let client = KeepAliveClient(port: port, timeout: 20)
                var local = Tally(), n = c
                while Date() < deadline {
                    n += 1
                    let stream = n % 5 == 0, cancel = n % 15 == 0
                    let body = "{\"prompt\": \"client \(c) request \(n)\", \"max_tokens\": \(4 + n % 9), \"stream\": \(stream)}"
                    local.requests += 1
                    do {
                        var chunks = 0
                        let reply = try client.send("POST", "/v1/completions", json: body) { _ in
                            chunks += 1
                            return !(cancel && chunks >= 2)
                        }
                        guard let reply else {
                            local.cancelled += 1
                            continue
                        }
                        let complete = stream ? reply.text.hasSuffix("data: [DONE]\n\n") : reply.text.contains("\"finish_reason\"")
                        if reply.status == 200 && complete {
                            local.answered += 1
                        } else {
                            local.failures["status \(reply.status): \(reply.text.prefix(120))", default: 0] += 1
                        }
                    } catch {
                        local.failures["\(error)", default: 0] += 1
                    }
                }
                local.connections = client.connections
                local.announcedCloses = client.announcedCloses
                tally.withLock { t in
                    t.requests += local.requests
                    t.answered += local.answered
                    t.cancelled += local.cancelled
                    t.connections += local.connections
                    t.announcedCloses += local.announcedCloses
                    t.failures.merge(local.failures, uniquingKeysWith: +)
                }
            }.start()
        }
        group.wait()
        return tally.withLock { $0 }
    }

    @Test("48 clients, one kept connection each, 8 s of streamed, plain and cancelled completions: every request answered, no connection closed unannounced")
    func everyRequestAnswered() async {
        for failure in await runBlocking({ c in try Self.everyRequestAnsweredBody(c) }) { Issue.record(Comment(rawValue: failure)) }
    }

    static func everyRequestAnsweredBody(_ c: Checks) throws {
        let procs = try ProcessClusterTests.Processes()
        defer { procs.killAll() }
        let port = Int(try LoopbackPort.pickFree())
        try procs.start("serve", "llama-coord", ["serve", "--model", Repo.demoModel, "--http", "127.0.0.1:\(port)",
                                                 "--slots", "8", "--threads", "1", "--ctx", "256"])
        try waitUntil("the endpoint answers", timeout: 60) {
            (try? request(method: "GET", url: "http://127.0.0.1:\(port)/health"))?.status == 200
        }
        let t = Self.load(port: port, clients: 48, seconds: 8)
        print("keep-alive load: \(t.requests) requests, \(t.answered) answered, \(t.cancelled) hung up on by the client, \(t.connections) connections, failures \(t.failures)")
        c.expect(t.failures.isEmpty, "\(t.failures.values.reduce(0, +)) of \(t.requests) requests failed: \(t.failures)")
        c.expect(t.answered + t.cancelled == t.requests)
        // Enough requests that most clients reused their connection several times.
        c.expect(t.requests >= 48 * 3, "too few requests to mean anything: \(t.requests)")
        // One connection per client, plus one after each hang-up or announced close.
        c.expect(t.connections <= 48 + t.cancelled + t.announcedCloses, "\(t.connections) connections")
    }
}
