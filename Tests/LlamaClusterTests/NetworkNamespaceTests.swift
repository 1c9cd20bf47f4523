import TestSupport
import Foundation
import LlamaClient
import Testing

/// Three hosts on one machine: the coordinator and two workers each in their own network
/// namespace, joined by veth pairs to a bridge in a fourth (the "switch"), plus one veth from
/// this process's namespace so the test can reach the coordinator's HTTP endpoint. Nothing runs
/// on loopback between them: the workers find the coordinator, advertise their own addresses
/// and pass activations to each other over the bridge. Needs root and iproute2; everything it
/// creates is removed at the end.
@Suite("Cluster across network namespaces", .serialized, .timeLimit(.minutes(3)),
       .enabled(if: NetworkNamespaces.usable, "needs root and `ip netns` (iproute2)"))
struct NetworkNamespaceTests {
    @Test("three hosts over a bridge answer as one process does; a host cut off for longer than the heartbeat timeout pauses its streams, which end undisturbed once it is back")
    func threeHosts() async throws {
        let expected = try await singleProcessTokens([1, 5132, 338], maxTokens: 24)
        // Processes and blocking calls for a minute: on a thread of its own, not a cooperative one.
        for failure in await runBlocking({ c in try Self.threeHostsBody(c, expected: expected) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    static func threeHostsBody(_ c: Checks, expected: [Int32]) throws {
        let net = try NetworkNamespaces(hosts: ["c", "w1", "w2"])
        defer { net.remove() }
        let procs = try ProcessClusterTests.Processes()
        defer { procs.stopAll() }
        let coordIP = net.address("c")
        let control = "tcp://\(coordIP):5555"
        let manifest = try ProcessClusterTests.writeManifest(procs, control: control, http: "\(coordIP):8080", activations: "f16",
                                                             extra: "insecure: true")
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path], netns: net.namespace("c"))
        // w1 has the model file; w2 has none and receives its layers from the coordinator.
        try procs.start("w1", "llama-worker", ["join", "--coordinator", control, "--name", "w1", "--threads", "1",
                                               "--model", Repo.demoModel, "--listen", "tcp://0.0.0.0:0", "--insecure"],
                        netns: net.namespace("w1"))
        try procs.start("w2", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                               "--cache-dir", procs.logs.appendingPathComponent("cache").path,
                                               "--listen", "tcp://0.0.0.0:0", "--insecure"],
                        netns: net.namespace("w2"))
        let endpoint = "http://\(coordIP):8080"
        try ProcessClusterTests.waitHealthy(endpoint, procs)

        // Each worker advertised the address of its own host, not loopback.
        let status = try request(method: "GET", url: endpoint + "/health").text
        c.expect(status.contains("tcp://\(net.address("w1")):") && status.contains("tcp://\(net.address("w2")):"), "\(status)")

        let engine = try LlamaEngineText()
        c.expect(try ProcessClusterTests.complete(endpoint, "Python is", 24) == engine.decode(expected))

        // w2's host drops off the network mid-stream (its link goes down: no FIN, no RST, the
        // process keeps running), for longer than the heartbeat timeout: /health names it and
        // the stream pauses. Back on the network, it is taken in again and the stream ends
        // with the text it would have had.
        try ProcessClusterTests.expectRecovery(c, endpoint, worker: "w2", lose: { try? net.cut("w2") }) {
            Thread.sleep(forTimeInterval: 2)
            try net.restore("w2")
        }
        try ProcessClusterTests.waitHealthy(endpoint, procs)
        c.expect(try ProcessClusterTests.complete(endpoint, "Python is", 24) == engine.decode(expected))
    }
}

/// Network namespaces joined by a bridge, with addresses 10.213.57.1... in the order of `hosts`
/// and 10.213.57.254 for this process's namespace.
final class NetworkNamespaces: @unchecked Sendable {
    static let ipTool = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Root, iproute2, and a namespace can actually be created here (not in every container).
    static let usable: Bool = {
        guard geteuid() == 0, ipTool != nil else { return false }
        let probe = "lcprobe\(UInt16.random(in: 0 ... .max))"
        guard (try? ip(["netns", "add", probe])) != nil else { return false }
        _ = try? ip(["netns", "del", probe])
        return true
    }()

    let suffix = String(format: "%04x", UInt16.random(in: 0 ... .max))
    let hosts: [String]
    private var created: [String] = []
    private var links: [String] = []

    init(hosts: [String]) throws {
        self.hosts = hosts
        do {
            let hub = namespace("hub")
            try addNamespace(hub)
            try Self.ip(["-n", hub, "link", "add", "br0", "type", "bridge"])
            try Self.ip(["-n", hub, "link", "set", "br0", "up"])
            for (i, host) in hosts.enumerated() {
                let ns = namespace(host)
                try addNamespace(ns)
                try Self.ip(["link", "add", "e\(i)\(suffix)", "netns", ns, "type", "veth", "peer", "name", "h\(i)\(suffix)", "netns", hub])
                try Self.ip(["-n", ns, "addr", "add", "\(address(host))/24", "dev", "e\(i)\(suffix)"])
                try Self.ip(["-n", ns, "link", "set", "e\(i)\(suffix)", "up"])
                try Self.ip(["-n", ns, "link", "set", "lo", "up"])
                try Self.ip(["-n", hub, "link", "set", "h\(i)\(suffix)", "master", "br0"])
                try Self.ip(["-n", hub, "link", "set", "h\(i)\(suffix)", "up"])
            }
            // This process's side: one more port on the bridge.
            let mine = "t\(suffix)"
            try Self.ip(["link", "add", mine, "type", "veth", "peer", "name", "ht\(suffix)", "netns", hub])
            links.append(mine)
            try Self.ip(["addr", "add", "10.213.57.254/24", "dev", mine])
            try Self.ip(["link", "set", mine, "up"])
            try Self.ip(["-n", hub, "link", "set", "ht\(suffix)", "master", "br0"])
            try Self.ip(["-n", hub, "link", "set", "ht\(suffix)", "up"])
        } catch {
            remove()
            throw error
        }
    }

    func namespace(_ host: String) -> String { "lc\(suffix)-\(host)" }

    func address(_ host: String) -> String { "10.213.57.\(hosts.firstIndex(of: host)! + 1)" }

    /// Takes `host`'s link down: its packets go nowhere.
    func cut(_ host: String) throws {
        try Self.ip(["-n", namespace(host), "link", "set", "e\(hosts.firstIndex(of: host)!)\(suffix)", "down"])
    }

    func restore(_ host: String) throws {
        try Self.ip(["-n", namespace(host), "link", "set", "e\(hosts.firstIndex(of: host)!)\(suffix)", "up"])
    }

    /// Deletes the namespaces (their veth ends go with them) and this namespace's link.
    func remove() {
        for link in links { _ = try? Self.ip(["link", "del", link]) }
        for ns in created.reversed() { _ = try? Self.ip(["netns", "del", ns]) }
        links.removeAll()
        created.removeAll()
    }

    private func addNamespace(_ name: String) throws {
        try Self.ip(["netns", "add", name])
        created.append(name)
    }

    @discardableResult
    static func ip(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ipTool!)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw CommandFailed(description: "ip \(args.joined(separator: " ")) failed: \(text)")
        }
        return text
    }
}

struct CommandFailed: Error, CustomStringConvertible {
    let description: String
}
