import TestSupport
import ClusterTransport
import Foundation
import LlamaCoordinator
import LlamaInference
import Testing

@Suite("Cluster manifest")
struct ManifestTests {
    static let example = """
        model: /models/llama-2-70b.Q4_0.gguf
        coordinator: { control: "tcp://0.0.0.0:5555", http: "0.0.0.0:8080" }
        activations: f16        # or f32
        insecure: true          # binds 0.0.0.0 without keys
        max_sequences: 8
        context: 4096
        workers:
          - { name: w1, layers: "0-39", threads: 8 }   # layers 0..39 inclusive
          - { name: w2 }                               # no range: balanced by reported memory
        """

    @Test("the documented form parses")
    func documentedForm() throws {
        let m = try ClusterManifest.parse(yaml: Self.example)
        #expect(m.model == "/models/llama-2-70b.Q4_0.gguf")
        #expect(m.controlAddress == "tcp://0.0.0.0:5555")
        #expect(m.httpHost == "0.0.0.0" && m.httpPort == 8080)
        #expect(m.activations == .f16)
        #expect(m.maxSequences == 8 && m.context == 4096)
        #expect(m.workers.count == 2)
        #expect(m.workers[0].layers == 0..<40 && m.workers[0].threads == 8)
        #expect(m.workers[1].layers == nil)
        #expect(m.framesInFlight == nil && m.batch == 512)
        #expect(m.kvCache == .f16)
        let ranges = try m.assignLayers(layerCount: 80)
        #expect(ranges["w1"] == 0..<40 && ranges["w2"] == 40..<80)
    }

    @Test("frames in flight: one per worker unless set")
    func framesInFlight() throws {
        let m = try ClusterManifest.parse(yaml: "model: m\nframes_in_flight: 1\nbatch: 64\nkv_cache: F32\nworkers: [{ name: a }, { name: b }]")
        #expect(m.framesInFlight == 1 && m.batch == 64 && m.kvCache == .f32)
    }

    @Test("workers without ranges share layers in proportion to memory")
    func balanced() throws {
        let m = try ClusterManifest.parse(yaml: """
            model: m.gguf
            workers: [{ name: a }, { name: b }, { name: c }]
            """, baseDirectory: "/base")
        #expect(m.model == "/base/m.gguf")
        let gib = 1 << 30
        let r = try m.assignLayers(layerCount: 80, memory: ["a": 16 * gib, "b": 32 * gib, "c": 32 * gib])
        #expect(r["a"] == 0..<16 && r["b"] == 16..<48 && r["c"] == 48..<80)
        let equal = try m.assignLayers(layerCount: 6)
        #expect(equal["a"] == 0..<2 && equal["b"] == 2..<4 && equal["c"] == 4..<6)
        // Every worker gets at least one layer even with tiny memory.
        let skewed = try m.assignLayers(layerCount: 3, memory: ["a": 1, "b": 1000 * gib, "c": 1])
        #expect(skewed["a"]!.count >= 1 && skewed["b"]!.count >= 1 && skewed["c"]!.count >= 1)
        #expect(skewed["a"]!.lowerBound == 0 && skewed["c"]!.upperBound == 3)
    }

    @Test("errors name the field", arguments: [
        ("workers: [{ name: a }]", "model"),
        ("model: m\n", "workers"),
        ("model: m\nworkers: []", "workers"),
        ("model: m\nworkers: [{ name: a, layers: \"4-\" }]", "workers[0].layers"),
        ("model: m\nworkers: [{ name: a, layers: \"5-2\" }]", "workers[0].layers"),
        ("model: m\nworkers: [{ name: a }, { name: a }]", "workers[1].name"),
        ("model: m\nworkers: [{ name: a, threads: -1 }]", "workers[0].threads"),
        ("model: m\nworkers: [{ name: a, thread: 2 }]", "workers[0].thread"),
        ("model: m\nactivations: f8\nworkers: [{ name: a }]", "activations"),
        ("model: m\nmax_sequences: zero\nworkers: [{ name: a }]", "max_sequences"),
        ("model: m\nframes_in_flight: 0\nworkers: [{ name: a }]", "frames_in_flight"),
        ("model: m\nkv_cache: q8_0\nworkers: [{ name: a }]", "kv_cache"),
        ("model: m\ncoordinator: { control: \"localhost\" }\nworkers: [{ name: a }]", "coordinator.control"),
        ("model: m\ncoordinator: { http: \"0.0.0.0:99999\" }\nworkers: [{ name: a }]", "coordinator.http"),
        ("model: m\ncontext: 4096\nworkers: [{ name: a, layers: \"10-19\" }, { name: b, layers: \"0-9\" }]", "workers[1].layers"),
        ("model: m\nworkerz: []\nworkers: [{ name: a }]", "workerz"),
        ("model: m\nspeculative: { ngram: 0 }\nworkers: [{ name: a }]", "speculative.ngram"),
        ("model: m\nspeculative: { ngram: 33 }\nworkers: [{ name: a }]", "speculative.ngram"),
        ("model: m\nspeculative: { model: d.gguf, p_min: 1.5 }\nworkers: [{ name: a }]", "speculative.p_min"),
        ("model: m\nspeculative: { draft: 0 }\nworkers: [{ name: a }]", "speculative.draft"),
        ("model: m\nspeculative: { modle: d.gguf }\nworkers: [{ name: a }]", "speculative.modle"),
        ("[1, 2, 3]", ""),
        ("model: [unclosed", ""),
    ])
    func namedErrors(_ yaml: String, _ field: String) {
        do {
            _ = try ClusterManifest.parse(yaml: yaml)
            Issue.record("expected an error for \(yaml.debugDescription)")
        } catch let e as ManifestError {
            #expect(e.field == field, "\(e)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("speculative: prompt lookup, a draft model beside the manifest, or both")
    func speculative() throws {
        let lookup = try ClusterManifest.parse(yaml: "model: m\nspeculative: { ngram: 3, draft: 8 }\nworkers: [{ name: a }]")
        #expect(lookup.speculative == SpeculativeSettings(ngram: 3, maxDraft: 8))
        let draft = try ClusterManifest.parse(yaml: "model: m\nspeculative: { ngram: 0, model: small.gguf, p_min: 0.5 }\nworkers: [{ name: a }]",
                                              baseDirectory: "/srv/llama")
        #expect(draft.speculative == SpeculativeSettings(ngram: 0, maxDraft: 8, draftModel: "/srv/llama/small.gguf", draftMinProbability: 0.5))
        #expect(try ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: a }]").speculative == nil)
    }

    @Test("ranges must cover the model")
    func coverage() throws {
        let gap = try ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: a, layers: \"0-9\" }, { name: b, layers: \"12-19\" }]")
        #expect(throws: ManifestError.self) { try gap.assignLayers(layerCount: 20) }
        let short = try ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: a, layers: \"0-9\" }]")
        #expect(throws: ManifestError.self) { try short.assignLayers(layerCount: 20) }
        let long = try ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: a, layers: \"0-29\" }]")
        #expect(throws: ManifestError.self) { try long.assignLayers(layerCount: 20) }
        let crowded = try ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: a }, { name: b }, { name: c }]")
        #expect(throws: ManifestError.self) { try crowded.assignLayers(layerCount: 2) }
    }

    @Test("a layer number of Int.max is an error, not an overflow", arguments: [
        "9223372036854775807", "0-9223372036854775807", "9223372036854775807-9223372036854775807",
    ])
    func layerRangeAtIntMax(_ range: String) {
        let yaml = "model: m\nworkers:\n  - { name: w1, layers: \"\(range)\" }\n"
        do {
            _ = try ClusterManifest.parse(yaml: yaml)
            Issue.record("expected an error for layers \(range)")
        } catch let e as ManifestError {
            #expect(e.field == "workers[0].layers", "\(e)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
        let last = try? ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: w1, layers: \"9223372036854775806\" }]")
        #expect(last?.workers[0].layers == 9223372036854775806..<Int.max)
    }

    @Test("security: the coordinator's key file, API keys, and worker keys as Z85 or .pub files beside the manifest",
          .enabled(if: CurveKeyPair.isAvailable, "libzmq without CURVE"))
    func security() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("manifest-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("keys"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let w1 = try CurveKeyPair.generate(), w2 = try CurveKeyPair.generate()
        try w2.write(to: dir.path + "/keys/w2")
        let m = try ClusterManifest.parse(yaml: """
            model: m.gguf
            coordinator: { control: "tcp://0.0.0.0:5555", http: "0.0.0.0:8080" }
            security: { key: keys/coord.key, api_keys: keys/api-keys.txt }
            workers:
              - { name: w1, key: "\(w1.publicKey)" }
              - { name: w2, key: keys/w2.pub }
            """, baseDirectory: dir.path)
        #expect(m.securityKey == dir.path + "/keys/coord.key")
        #expect(m.apiKeysFile == dir.path + "/keys/api-keys.txt")
        #expect(m.workers.map(\.key) == [w1.publicKey, w2.publicKey])
        #expect(m.insecure == false)

        let cases: [(String, String)] = [
            ("security: { key: c.key }\nworkers: [{ name: a }]", "workers[0].key"),
            ("workers: [{ name: a, key: \"\(w1.publicKey)\" }]", "workers[0].key"),
            ("security: { key: c.key }\nworkers: [{ name: a, key: \"not-a-key\" }]", "workers[0].key"),
            ("security: { key: c.key }\nworkers: [{ name: a, key: keys/missing.pub }]", "workers[0].key"),
            ("security: { api_keys: k.txt }\nworkers: [{ name: a }]", "security.key"),
            ("security: { key: c.key, extra: 1 }\nworkers: [{ name: a, key: keys/w2.pub }]", "security.extra"),
        ]
        for (body, field) in cases {
            do {
                _ = try ClusterManifest.parse(yaml: "model: m\n" + body, baseDirectory: dir.path)
                Issue.record("expected an error for \(body.debugDescription)")
            } catch let e as ManifestError {
                #expect(e.field == field, "\(body): \(e)")
            }
        }
    }

    @Test("secure by default: without keys only loopback addresses, unless insecure: true")
    func loopbackUnlessKeys() throws {
        for (coordinator, field) in [("{ control: \"tcp://0.0.0.0:5555\" }", "coordinator.control"),
                                     ("{ http: \"0.0.0.0:8080\" }", "coordinator.http"),
                                     ("{ control: \"tcp://10.0.0.1:5555\" }", "coordinator.control")] {
            let yaml = "model: m\ncoordinator: \(coordinator)\nworkers: [{ name: a }]"
            #expect(throws: ManifestError.self, "\(yaml)") { try ClusterManifest.parse(yaml: yaml) }
            do { _ = try ClusterManifest.parse(yaml: yaml) } catch let e as ManifestError { #expect(e.field == field) }
        }
        let loopback = try ClusterManifest.parse(yaml: "model: m\nworkers: [{ name: a }]")
        #expect(!loopback.runsInsecurely)
        let insecure = try ClusterManifest.parse(yaml: Self.example)
        #expect(insecure.runsInsecurely)
    }

    @Test("the example manifests in deploy/ parse, with keys made beside them",
          .enabled(if: CurveKeyPair.isAvailable, "libzmq without CURVE"),
          arguments: [("local-cluster.yaml", ["w1", "w2"]), ("llama2-70b-4hosts.yaml", ["node1", "node2", "node3", "node4", "spare1"])])
    func deployManifests(_ file: String, _ names: [String]) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("keys"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var keys: [String] = []
        for name in names {
            let pair = try CurveKeyPair.generate()
            try pair.write(to: dir.path + "/keys/" + name)
            keys.append(pair.publicKey)
        }
        let yaml = try String(contentsOf: Repo.root.appendingPathComponent("deploy/" + file), encoding: .utf8)
        let m = try ClusterManifest.parse(yaml: yaml, baseDirectory: dir.path)
        #expect(m.workers.map(\.name) == names)
        #expect(m.workers.map(\.key) == keys)
        #expect(m.securityKey == dir.path + "/keys/coord.key")
        #expect(m.apiKeysFile == dir.path + "/keys/api-keys.txt")
        #expect(!m.runsInsecurely)
    }
}
