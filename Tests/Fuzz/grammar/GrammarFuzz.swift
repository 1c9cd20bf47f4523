// libFuzzer harness: grammars from outside and text run through them.
//
// The first byte chooses what the rest is:
//   0: GBNF text, `Grammar(gbnf:)`;
//   1: a JSON schema, `JSONSchemaValue(json:)` then `Grammar.gbnf(jsonSchema:)` and its grammar;
//   2: the JSON grammar (`Grammar.jsonObjectGBNF`), the rest being only text to match.
// For modes 0 and 1 the grammar text ends at the first NUL byte; what follows (all of the rest
// in mode 2) is fed to a `GrammarMatcher` over a small vocabulary (every single byte, a few
// longer pieces, end-of-text): as raw bytes at once, then token by token, the allowed-token
// list, the logit mask and `allows` being checked against each other on the way.
// Any grammar or text may be rejected with an error.

import FuzzDriver
import LlamaGrammar

/// Token b < 256 is the byte b; then a few longer pieces; then end-of-text.
let longerPieces: [[UInt8]] = ["true", "{\"", "\":", "  ", "\u{00E9}", "null", "ab", "\u{1F600}"].map { Array($0.utf8) }
let endOfText = Int32(256 + longerPieces.count)
let vocabulary = GrammarVocabulary(
    pieces: (0..<256).map { [UInt8($0)] } + longerPieces + [[]], endOfText: endOfText, isControl: { $0 == endOfText })
let jsonGrammar: Grammar = {
    do { return try Grammar(gbnf: Grammar.jsonObjectGBNF) } catch { fatalError("the JSON grammar does not compile: \(error)") }
}()

/// At most this many bytes of text are matched per input (a grammar's work per byte is bounded;
/// this keeps one input's time bounded too).
let textLimit = 512

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    _ = jsonGrammar.compiledRuleCount
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeBufferPointer(start: data + 1, count: size - 1)
    let grammar: Grammar
    let text: ArraySlice<UInt8>
    switch data[0] % 3 {
    case 0, 1:
        let end = input.firstIndex(of: 0) ?? input.count
        let source = String(decoding: input[..<end], as: UTF8.self)
        text = end < input.count ? ArraySlice(input[(end + 1)...]) : []
        if data[0] % 3 == 0 {
            guard let g = try? Grammar(gbnf: source) else { return 0 }
            grammar = g
        } else {
            guard let schema = try? JSONSchemaValue(json: source),
                  let gbnf = try? Grammar.gbnf(jsonSchema: schema) else { return 0 }
            do {
                grammar = try Grammar(gbnf: gbnf)
            } catch {
                preconditionFailure("the GBNF made from a schema does not compile: \(error)\n\(gbnf)")
            }
        }
    default:
        grammar = jsonGrammar
        text = ArraySlice(input)
    }
    run(grammar, Array(text.prefix(textLimit)))
    return 0
}

func run(_ grammar: Grammar, _ text: [UInt8]) {
    var whole = GrammarMatcher(grammar: grammar, vocabulary: vocabulary)
    let allowsWhole = whole.allows(bytes: text)
    let acceptedWhole = (try? whole.accept(bytes: text)) != nil
    precondition(allowsWhole == acceptedWhole, "allows(bytes:) and accept(bytes:) disagree")

    var matcher = GrammarMatcher(grammar: grammar, vocabulary: vocabulary)
    var logits = [Float](repeating: 0, count: vocabulary.count)
    var fedAll = true
    for (i, byte) in text.enumerated() {
        let token = Int32(byte)
        if i % 16 == 0 {
            let allowed = Set(matcher.allowedTokens())
            for j in logits.indices { logits[j] = 0 }
            logits.withUnsafeMutableBufferPointer { matcher.mask(logits: $0) }
            for t in 0..<Int32(vocabulary.count) {
                precondition(allowed.contains(t) == (logits[Int(t)] != -.infinity), "the mask and allowedTokens disagree on \(t)")
            }
            precondition(allowed.contains(token) == matcher.allows(token), "allows and allowedTokens disagree on \(token)")
        }
        let allows = matcher.allows(token)
        do {
            try matcher.accept(token)
            precondition(allows, "token \(token) was accepted but not allowed")
        } catch {
            precondition(!allows, "token \(token) was allowed but not accepted")
            fedAll = false
            break
        }
    }
    if fedAll {
        precondition(acceptedWhole, "the bytes are accepted one by one but not at once")
        precondition(matcher.canEnd == whole.canEnd, "canEnd differs between byte and token feeding")
        if matcher.canEnd { try? matcher.accept(endOfText) }
        _ = matcher.isFinished
    }
}

/// The program's entry (SwiftPM aliases `main` to it): libFuzzer's driver with this harness.
@_cdecl("fuzz_grammar_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        var empty: UInt8 = 0
        return fuzz(data ?? withUnsafePointer(to: &empty) { $0 }, size)
    }
}
