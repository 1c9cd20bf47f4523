import Foundation
import LlamaInference
import LlamaServer
import TestSupport
import Testing

/// Log-probabilities through the HTTP endpoint over the demo model, checked against the
/// log-softmax of the logits an engine of the test's own computes for the same tokens.
@Suite("Log-probabilities on the demo model", .serialized, .timeLimit(.minutes(5)))
struct DemoLogprobTests {
    static let prompt = "Once upon a time, there was a little girl named"

    /// Checks a legacy completions `logprobs` object against the reference rows: `tokens[i]`
    /// is predicted by `rows[i]` (nil: the first prompt token, whose log-probability is null).
    static func checkLegacy(_ lp: JSONValue?, ids: [Int32], rows: [[Float]?], top: Int, text: String,
                            backend: any CompletionBackend, _ where_: String) {
        guard let lp, case let .array(tokens)? = lp["tokens"], case let .array(values)? = lp["token_logprobs"],
              case let .array(tops)? = lp["top_logprobs"], case let .array(offsets)? = lp["text_offset"] else {
            Issue.record("\(where_): no legacy logprobs object: \(lp?.serialized ?? "nil")")
            return
        }
        #expect(tokens.count == ids.count && values.count == ids.count && tops.count == ids.count && offsets.count == ids.count,
                "\(where_): \(tokens.count) tokens for \(ids.count)")
        guard tokens.count == ids.count else { return }
        let scalars = Array(text.unicodeScalars)
        for (i, id) in ids.enumerated() {
            let piece = String(decoding: backend.piece(id), as: UTF8.self)
            #expect(tokens[i].stringValue == piece, "\(where_): token \(i)")
            // The offset is where the token's text starts in the choice's text (a leading
            // space the tokenizer added to the prompt is not in it).
            if let at = offsets[i].integerValue.map(Int.init), !piece.isEmpty, at < scalars.count {
                let rest = String(String.UnicodeScalarView(scalars[at...]))
                #expect(rest.hasPrefix(piece) || (" " + rest).hasPrefix(piece), "\(where_): text_offset of token \(i) = \(at)")
            }
            guard let row = rows[i] else {
                #expect(values[i] == .null, "\(where_): the first prompt token's logprob is null")
                #expect(tops[i] == .null)
                continue
            }
            let expected = ReferenceScorer.logprob(row, id)
            #expect(close(values[i].doubleValue, expected), "\(where_): token \(i): \(values[i].serialized) vs \(expected)")
            guard case let .object(alternatives) = tops[i] else {
                Issue.record("\(where_): top_logprobs[\(i)] is not an object")
                continue
            }
            // Best first, as OpenAI writes them (the server and the test's parser keep member order).
            let best = ReferenceScorer.ranked(row, top: top)
            let reported = Dictionary(alternatives.map { ($0.0, $0.1.doubleValue) }, uniquingKeysWith: { a, _ in a })
            #expect(alternatives.map(\.0) == best.map { String(decoding: backend.piece($0), as: UTF8.self) },
                    "\(where_): top tokens at \(i)")
            for b in best {
                let text = String(decoding: backend.piece(b), as: UTF8.self)
                #expect(close(reported[text] ?? nil, ReferenceScorer.logprob(row, b)), "\(where_): alternative \(text.debugDescription) at \(i)")
            }
        }
    }

    @Test("completions: logprobs N on a greedy completion, with and without echo, equal the engine's log-softmax")
    func completionLogprobs() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            let promptIDs = backend.tokenize(Self.prompt, addBOS: true)
            let (greedy, rows) = try scorer.greedy(prompt: promptIDs, count: 8, stopAt: backend.info.eosID)
            try #require(greedy.count == 8)
            let plain = try await client.post("/v1/completions",
                #"{"prompt": "\#(Self.prompt)", "max_tokens": 8, "temperature": 0, "logprobs": 3}"#)
            #expect(plain.status == 200)
            let choice = plain.json["choices"]?[0]
            #expect(choice?["text"]?.stringValue == String(decoding: greedy.flatMap { backend.piece($0) }, as: UTF8.self))
            Self.checkLegacy(choice?["logprobs"], ids: greedy, rows: rows, top: 3, text: choice?["text"]?.stringValue ?? "",
                             backend: backend, "no echo")

            let echoed = try await client.post("/v1/completions",
                #"{"prompt": "\#(Self.prompt)", "max_tokens": 8, "temperature": 0, "logprobs": 2, "echo": true}"#)
            #expect(echoed.status == 200)
            let e = echoed.json["choices"]?[0]
            let text = e?["text"]?.stringValue ?? ""
            #expect(text.hasPrefix(Self.prompt))
            let promptRows = try scorer.rows(prompt: promptIDs)
            let all: [[Float]?] = [nil] + promptRows.dropLast().map { $0 } + rows.map { $0 }
            Self.checkLegacy(e?["logprobs"], ids: promptIDs + greedy, rows: all, top: 2, text: text, backend: backend, "echo")
        }
    }

    @Test("max_tokens 0 with echo scores a prompt (token ids, as evaluation harnesses send) without generating")
    func echoScoring() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            for text in [Self.prompt, "The dog ran to the park and the sun was", "Tom had a red ball. He"] {
                let ids = backend.tokenize(text, addBOS: true)
                let rows = try scorer.rows(prompt: ids)
                for asTokens in [false, true] {
                    let promptField = asTokens ? "[" + ids.map(String.init).joined(separator: ",") + "]" : "\"\(text)\""
                    let before = backend.counters().generatedTokensTotal
                    let reply = try await client.post("/v1/completions",
                        #"{"prompt": \#(promptField), "max_tokens": 0, "echo": true, "logprobs": 1}"#)
                    #expect(reply.status == 200)
                    let c = reply.json["choices"]?[0]
                    #expect(c?["finish_reason"] == "length")
                    #expect(reply.json["usage"]?["completion_tokens"] == 0)
                    #expect(backend.counters().generatedTokensTotal == before, "nothing generated")
                    let echoed = c?["text"]?.stringValue ?? ""
                    Self.checkLegacy(c?["logprobs"], ids: ids, rows: [nil] + rows.dropLast().map { $0 }, top: 1, text: echoed,
                                     backend: backend, "scoring \(text.debugDescription) as \(asTokens ? "ids" : "text")")
                }
            }
        }
    }

    @Test("echo scoring agrees with the independent numpy forward pass (Tests/Reference/llama_ref.py)")
    func againstNumpyReference() async throws {
        try await withDemoServer { backend, client in
            let ids = backend.tokenize(Self.prompt, addBOS: true)
            let json = try runProcess(referencePython, [Repo.reference, Repo.demoModel, "--all-positions",
                                                        "--tokens", ids.map(String.init).joined(separator: ",")])
            let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            let rows = try #require((decoded?["logits"] as? [[NSNumber]])?.map { $0.map(\.floatValue) })
            try #require(rows.count == ids.count)
            let reply = try await client.post("/v1/completions",
                #"{"prompt": "\#(Self.prompt)", "max_tokens": 0, "echo": true, "logprobs": 1}"#)
            guard case let .array(values)? = reply.json["choices"]?[0]?["logprobs"]?["token_logprobs"], values.count == ids.count else {
                Issue.record("no token_logprobs: \(reply.text)")
                return
            }
            #expect(values[0] == .null)
            var worst = 0.0
            for i in 1..<ids.count {
                let expected = ReferenceScorer.logprob(rows[i - 1], ids[i])
                let got = try #require(values[i].doubleValue)
                worst = max(worst, abs(got - expected))
            }
            // The engine quantizes activations to 8 bits for Q8_0 weights and keeps the KV cache
            // in f16; the reference computes in float64 from the dequantized weights (0.041 at
            // most on this machine's AVX-512 kernels).
            #expect(worst < 0.1, "largest |difference| from the numpy reference: \(worst)")
        }
    }

    @Test("values are before sampling transforms: top_k, temperature and logit_bias change the pick, not the logprob")
    func beforeTransforms() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            let ids = backend.tokenize(Self.prompt, addBOS: true)
            let row = try scorer.rows(prompt: ids).last!
            // A token well down the raw ranking, pushed to the top by a bias.
            let target = ReferenceScorer.ranked(row, top: 50)[49]
            let reply = try await client.post("/v1/completions", #"""
                {"prompt": "\#(Self.prompt)", "max_tokens": 1, "temperature": 0.9, "top_k": 5, "seed": 3,
                 "logit_bias": {"\#(target)": 60}, "logprobs": 5}
                """#)
            #expect(reply.status == 200)
            let lp = reply.json["choices"]?[0]?["logprobs"]
            #expect(lp?["tokens"]?[0]?.stringValue == String(decoding: backend.piece(target), as: UTF8.self), "the bias picked it")
            let reported = lp?["token_logprobs"]?[0]?.doubleValue
            let raw = ReferenceScorer.logprob(row, target)
            #expect(close(reported, raw), "raw log-softmax \(raw), reported \(reported ?? .nan)")
            #expect(raw < -2, "after the bias and top-k it would be near 0; raw it is \(raw)")
            Self.checkLegacy(lp, ids: [target], rows: [row], top: 5, text: reply.json["choices"]?[0]?["text"]?.stringValue ?? "",
                             backend: backend, "biased")
            // Sampled with top_k 5 at temperature 0.9: the pick is among the raw top 5 and its
            // logprob is the raw one, not the renormalised one.
            for seed in 0..<4 {
                let r = try await client.post("/v1/completions", #"""
                    {"prompt": "\#(Self.prompt)", "max_tokens": 1, "temperature": 0.9, "top_k": 5, "seed": \#(seed), "logprobs": 5}
                    """#)
                let l = r.json["choices"]?[0]?["logprobs"]
                let best = ReferenceScorer.ranked(row, top: 5)
                let picked = best.first { String(decoding: backend.piece($0), as: UTF8.self) == l?["tokens"]?[0]?.stringValue }
                let p = try #require(picked, "seed \(seed): the pick is among the raw top 5")
                Self.checkLegacy(l, ids: [p], rows: [row], top: 5, text: r.json["choices"]?[0]?["text"]?.stringValue ?? "",
                                 backend: backend, "seed \(seed)")
                let topSum = (l?["top_logprobs"]?[0].flatMap { v -> [Double]? in
                    if case let .object(m) = v { return m.compactMap { $0.1.doubleValue } } else { return nil }
                } ?? []).reduce(0) { $0 + exp($1) }
                #expect(topSum < 0.999, "the five alternatives are not renormalised to 1 (\(topSum))")
            }
        }
    }

    @Test("presence and frequency penalties (OpenAI's formula over the last repeat_last_n tokens) steer greedy picks")
    func penalties() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            let ids = backend.tokenize(Self.prompt, addBOS: true)
            let (presence, frequency, window) = (0.6, 0.9, 16)
            // The reference: logit - frequency * count - presence * (count > 0), counted over
            // the last `window` tokens of prompt and output, then the highest (lowest id on ties).
            var history = ids, picked: [Int32] = []
            scorer.engine.reset()
            var row = try scorer.engine.evaluate(ids, startPosition: 0, logits: .last)
            for _ in 0..<16 {
                var counts: [Int32: Int] = [:]
                for t in history.suffix(window) { counts[t, default: 0] += 1 }
                var adjusted = row
                adjusted[Int(backend.info.eosID)] -= 100  // the request's logit_bias, applied first
                for (t, c) in counts { adjusted[Int(t)] -= Float(frequency) * Float(c) + Float(presence) }
                let next = ReferenceScorer.ranked(adjusted, top: 1)[0]
                picked.append(next)
                history.append(next)
                row = try scorer.engine.evaluate([next], startPosition: history.count - 1, logits: .last)
            }
            let plain = try scorer.greedy(prompt: ids, count: 16, stopAt: -1).tokens
            #expect(plain != picked, "the penalties change the greedy text")
            let reply = try await client.post("/v1/completions", #"""
                {"prompt": "\#(Self.prompt)", "max_tokens": 16, "temperature": 0, "presence_penalty": \#(presence),
                 "frequency_penalty": \#(frequency), "repeat_last_n": \#(window),
                 "logit_bias": {"\#(backend.info.eosID)": -100}, "logprobs": 0}
                """#)
            guard case let .array(tokens)? = reply.json["choices"]?[0]?["logprobs"]?["tokens"] else {
                Issue.record("no tokens: \(reply.text)")
                return
            }
            #expect(tokens.compactMap(\.stringValue) == picked.map { String(decoding: backend.piece($0), as: UTF8.self) })
        }
    }

    @Test("completions logprobs: true is read as logprobs 0 (the chosen tokens, no alternatives)")
    func logprobsTrue() async throws {
        let scorer = try ReferenceScorer()
        try await withDemoServer { backend, client in
            let ids = backend.tokenize(Self.prompt, addBOS: true)
            let (greedy, rows) = try scorer.greedy(prompt: ids, count: 3, stopAt: backend.info.eosID)
            let reply = try await client.post("/v1/completions",
                #"{"prompt": "\#(Self.prompt)", "max_tokens": 3, "temperature": 0, "logprobs": true}"#)
            #expect(reply.status == 200, "\(reply.text)")
            let lp = reply.json["choices"]?[0]?["logprobs"]
            Self.checkLegacy(lp, ids: greedy, rows: rows, top: 0, text: reply.json["choices"]?[0]?["text"]?.stringValue ?? "",
                             backend: backend, "logprobs true")
        }
    }
}
