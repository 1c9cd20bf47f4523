import ClusterTransport
import Foundation
import LlamaClient
import TestSupport
import Testing

/// The executables with security on, set up the way the README tells a user to: keys from
/// `keygen`, a manifest naming them, API keys in a file, HTTPS with a certificate of its own.
@Suite("Secure processes", .serialized, .timeLimit(.minutes(3)), .enabled(if: CurveKeyPair.isAvailable, "libzmq without CURVE"))
struct SecureProcessTests {
    typealias Processes = ProcessClusterTests.Processes

    /// Runs `tool args` to its end and returns its exit status and output.
    static func run(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = Repo.binDirectory.appendingPathComponent(tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func keygen(_ tool: String, _ prefix: URL) throws -> String {
        let r = try run(tool, ["keygen", "--out", prefix.path])
        guard r.status == 0 else { throw Failure(description: "\(tool) keygen: \(r.output)") }
        let attributes = try FileManager.default.attributesOfItem(atPath: prefix.path + ".key")
        guard (attributes[.posixPermissions] as? Int) == 0o600 else { throw Failure(description: "the secret key is not mode 0600") }
        return try String(contentsOfFile: prefix.path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Weight files a worker's cache directory holds (what the coordinator streamed to it).
    static func streamedFiles(_ directory: String) -> [String] {
        ((try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".gguf") && !$0.hasPrefix("calibration") }
    }

    @Test("keys from keygen: the cluster serves behind CURVE and API keys; rogue joins under a live name get nothing")
    func secureCluster() async throws {
        let expected = try await singleProcessTokens([1, 5132, 338], maxTokens: 16)
        // Processes and blocking waits: on a thread of its own, not a cooperative one.
        for failure in await runBlocking({ c in try Self.secureClusterBody(c, expected: expected) }) {
            Issue.record(Comment(rawValue: failure))
        }
    }

    static func secureClusterBody(_ c: Checks, expected: [Int32]) throws {
        let procs = try Processes()
        defer { procs.stopAll() }
        let dir = procs.logs
        let coordPub = try keygen("llama-coord", dir.appendingPathComponent("coord"))
        let w1Pub = try keygen("llama-worker", dir.appendingPathComponent("w1"))
        let w2Pub = try keygen("llama-worker", dir.appendingPathComponent("w2"))
        _ = try keygen("llama-worker", dir.appendingPathComponent("rogue"))
        let apiKey = "cluster-api-key-\(UInt64.random(in: 1...UInt64.max))"
        try "\(apiKey)\n".write(to: dir.appendingPathComponent("api-keys.txt"), atomically: true, encoding: .utf8)

        let control = try LoopbackPort.freeEndpoint()
        let httpPort = try LoopbackPort.pickFree()
        let endpoint = "http://127.0.0.1:\(httpPort)"
        let manifest = dir.appendingPathComponent("cluster.yaml")
        try """
            model: \(Repo.demoModel)
            coordinator: { control: "\(control)", http: "127.0.0.1:\(httpPort)", threads: 1 }
            max_sequences: 2
            context: 256
            heartbeat_timeout: 1.5
            security: { key: \(dir.path)/coord.key, api_keys: \(dir.path)/api-keys.txt }
            workers:
              - { name: w1, threads: 1, key: "\(w1Pub)" }
              - { name: w2, threads: 1, key: "\(w2Pub)" }
            """.write(to: manifest, atomically: true, encoding: .utf8)
        try procs.start("coord", "llama-coord", ["start", "--manifest", manifest.path])
        let coordKey = dir.appendingPathComponent("coord.pub").path
        try procs.start("w1", "llama-worker", ["join", "--coordinator", control, "--name", "w1", "--threads", "1",
                                               "--model", Repo.demoModel, "--key", dir.path + "/w1.key", "--coordinator-key", coordKey])
        let w2Cache = dir.appendingPathComponent("w2-cache").path
        try procs.start("w2", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                               "--cache-dir", w2Cache, "--key", dir.path + "/w2.key", "--coordinator-key", coordPub])
        try ProcessClusterTests.waitHealthy(endpoint, procs)

        // HTTP: /health is open, everything else wants the key.
        let noKey = try request(method: "POST", url: endpoint + "/v1/completions",
                                body: Data(#"{"prompt": "Python is", "max_tokens": 4}"#.utf8), headers: ["Content-Type": "application/json"])
        c.expect(noKey.status == 401 && noKey.text.contains("authentication_error"), "\(noKey.status) \(noKey.text)")
        let wrong = try request(method: "GET", url: endpoint + "/v1/models", headers: ["X-Api-Key": "not-the-key"])
        c.expect(wrong.status == 401)
        let engine = try LlamaEngineText()
        func complete() throws -> String {
            var text = ""
            _ = try streamCompletion(endpoint: endpoint, prompt: "Python is", parameters: .greedy, maxTokens: 16, apiKey: apiKey) { text += $0 }
            return text
        }
        c.expect(try complete() == engine.decode(expected))
        c.expect(!streamedFiles(w2Cache).isEmpty, "the listed w2 was streamed its layers")

        // Rogues under w2's live name, with no model (they would be streamed w2's layers): one
        // with no key at all (NULL mechanism), one with a key the manifest does not list, one
        // with w1's key.
        let caches = ["plain", "unlisted", "thief"].map { dir.appendingPathComponent("\($0)-cache").path }
        try procs.start("plain", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                                  "--cache-dir", caches[0]])
        try procs.start("unlisted", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                                     "--cache-dir", caches[1], "--key", dir.path + "/rogue.key", "--coordinator-key", coordPub])
        try procs.start("thief", "llama-worker", ["join", "--coordinator", control, "--name", "w2", "--threads", "1",
                                                  "--cache-dir", caches[2], "--key", dir.path + "/w1.key", "--coordinator-key", coordPub])
        try waitUntil("the coordinator logs both refusals", timeout: 20) {
            let log = procs.log("coord")
            return log.contains("refused a CURVE handshake") && log.contains("refused:")
        }
        Thread.sleep(forTimeInterval: 3)     // several join attempts and heartbeat timeouts
        for cache in caches { c.expect(streamedFiles(cache).isEmpty, "\(cache): no weight bytes reach a rogue") }
        let health = try request(method: "GET", url: endpoint + "/health")
        c.expect(health.status == 200, "\(health.text)")
        c.expect(try complete() == engine.decode(expected), "the real w2 keeps serving")
        let metrics = try request(method: "GET", url: endpoint + "/metrics", apiKey: apiKey)
        let refused = metrics.text.split(separator: "\n").first { $0.hasPrefix("llamacluster_refused_peers_total") }
        c.expect(refused.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 2 } == true, "\(refused ?? "no counter")")
        c.expect(procs.log("coord").contains("from tcp://127.0.0.1") || procs.log("coord").contains("from 127.0.0.1"),
                "refusals name the peer's address")
        c.expect(!procs.log("coord").contains("w2 missing"), "an impostor with a listed key did not cut the real w2 off")

        // The data path: a peer with an unlisted key pushing frames at w2's input and at the
        // coordinator's return socket is refused at the handshake, and both log it.
        let rogueKeys = try CurveKeyPair.load(secretKeyFile: dir.path + "/rogue.key")
        let targets = [("w2", "data input ", w2Pub), ("coord", "data return ", coordPub)]
        let context = try ZMQContext()
        var sockets: [ZMQSocket] = []
        for (log, marker, serverKey) in targets {
            guard let line = procs.log(log).split(separator: "\n").first(where: { $0.contains(marker) }) else { throw Failure(description: "no \(marker)in the \(log) log") }
            guard let address = line.components(separatedBy: marker).last?.split(whereSeparator: { ",) ".contains($0) }).first else { throw Failure(description: "no address in \(line)") }
            let push = try context.socket(.push)
            try push.set(.sendTimeout(milliseconds: 200))
            try push.set(.curveServerKey(serverKey))
            try push.set(.curvePublicKey(rogueKeys.publicKey))
            try push.set(.curveSecretKey(rogueKeys.secretKey))
            try push.connect(String(address))
            _ = try? push.send([[UInt8](repeating: 0x41, count: 64)], timeout: .milliseconds(200))
            sockets.append(push)
        }
        try waitUntil("w2 logs the refused data peer", timeout: 10) {
            procs.log("w2").contains("refused a CURVE handshake on the data input from")
        }
        try waitUntil("the coordinator logs the refused data peer", timeout: 10) {
            procs.log("coord").contains("refused a CURVE handshake on the data socket")
        }
        sockets.removeAll()
        c.expect(try complete() == engine.decode(expected), "the cluster still answers")
    }

    @Test("bad key files are refused at start with an error naming them")
    func badKeyFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llamacluster-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try Self.keygen("llama-worker", dir.appendingPathComponent("w"))
        let coordPub = try Self.keygen("llama-coord", dir.appendingPathComponent("c"))
        let open = dir.appendingPathComponent("open.key").path
        try FileManager.default.copyItem(atPath: dir.path + "/w.key", toPath: open)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: open)
        let garbage = dir.appendingPathComponent("garbage.key").path
        try "not a key\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: garbage)
        let cases: [(args: [String], names: String)] = [
            (["--key", open, "--coordinator-key", coordPub], open),
            (["--key", garbage, "--coordinator-key", coordPub], garbage),
            (["--key", dir.path + "/missing.key", "--coordinator-key", coordPub], "missing.key"),
            (["--key", dir.path + "/w.key", "--coordinator-key", "short"], "coordinator-key"),
        ]
        for c in cases {
            let r = try Self.run("llama-worker", ["join", "--coordinator", "tcp://127.0.0.1:1", "--name", "w"] + c.args)
            #expect(r.status != 0, "\(c.args): started")
            #expect(r.output.contains(c.names), "\(c.args): \(r.output)")
        }
    }

    @Test("serve over HTTPS with an API key: a TLS round trip with the certificate's CA, refusal without the key")
    func httpsServe() async throws {
        let procs = try Processes()
        defer { procs.stopAll() }
        let cert = procs.logs.appendingPathComponent("cert.pem").path
        let key = procs.logs.appendingPathComponent("key.pem").path
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                             "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                             "-addext", "subjectAltName=IP:127.0.0.1"]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        try #require(openssl.terminationStatus == 0, "openssl could not make a certificate")
        let port = try LoopbackPort.pickFree()
        try procs.start("serve", "llama-coord", ["serve", "--model", Repo.demoModel, "--http", "127.0.0.1:\(port)", "--threads", "1",
                                                 "--tls-cert", cert, "--tls-key", key, "--api-key", "tls-test-key"])
        let endpoint = LlamaEndpoint("https://127.0.0.1:\(port)", apiKey: "tls-test-key", caCertificateFile: cert)
        let deadline = Date().addingTimeInterval(60)
        var healthy = false
        while Date() < deadline, !healthy {
            healthy = (try? await LlamaEndpoint("https://127.0.0.1:\(port)", caCertificateFile: cert).request(method: "GET", path: "/health").status) == 200
            if !healthy { try await Task.sleep(nanoseconds: 200_000_000) }
        }
        try #require(healthy, "no HTTPS /health after 60 s: \(procs.log("serve"))")
        let expected = try await singleProcessTokens([1, 5132, 338], maxTokens: 8)
        var text = ""
        _ = try await endpoint.streamCompletion(prompt: "Python is", parameters: .greedy, maxTokens: 8) { text += $0 }
        #expect(text == (try LlamaEngineText()).decode(expected))
        let refused = try await LlamaEndpoint("https://127.0.0.1:\(port)", caCertificateFile: cert).request(method: "GET", path: "/v1/models")
        #expect(refused.status == 401)
        // Plain HTTP on the TLS port gets no answer from the model.
        let plain = try? request(method: "GET", url: "http://127.0.0.1:\(port)/v1/models", apiKey: "tls-test-key")
        #expect(plain?.status != 200)
    }
}
