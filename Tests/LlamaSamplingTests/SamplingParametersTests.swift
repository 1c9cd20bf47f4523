import TestSupport
import Foundation
import LlamaSampling
import Testing

@Suite("Sampling parameters")
struct SamplingParametersTests {
    @Test("defaults match llama.cpp and are valid")
    func defaults() throws {
        let parameters = SamplingParameters()
        #expect(parameters.temperature == 0.8)
        #expect(parameters.topK == 40)
        #expect(parameters.topP == 0.95)
        #expect(parameters.minP == 0.05)
        #expect(parameters.repeatPenalty == 1.0)
        #expect(parameters.repeatLastN == 64)
        #expect(parameters.seed == nil)
        #expect(try parameters.validated() == parameters)
        #expect(try SamplingParameters.greedy.validated().temperature == 0)
    }

    @Test("edge values that turn stages off are valid")
    func edgeValuesAreValid() throws {
        let parameters = SamplingParameters(
            temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, repeatLastN: 0, seed: 0)
        #expect(try parameters.validated() == parameters)
        let other = SamplingParameters(minP: 1, repeatPenalty: 0.5,
                                       repeatLastN: SamplingParameters.maximumRepeatLastN)
        #expect(try other.validated() == other)
    }

    static let invalidCases: [(String, SamplingParameters)] = [
        ("temperature", SamplingParameters(temperature: -0.1)),
        ("temperature", SamplingParameters(temperature: .infinity)),
        ("temperature", SamplingParameters(temperature: .nan)),
        ("topK", SamplingParameters(topK: -1)),
        ("topP", SamplingParameters(topP: 0)),
        ("topP", SamplingParameters(topP: 1.01)),
        ("topP", SamplingParameters(topP: .nan)),
        ("minP", SamplingParameters(minP: -0.01)),
        ("minP", SamplingParameters(minP: 1.5)),
        ("minP", SamplingParameters(minP: .nan)),
        ("repeatPenalty", SamplingParameters(repeatPenalty: 0)),
        ("repeatPenalty", SamplingParameters(repeatPenalty: -1)),
        ("repeatPenalty", SamplingParameters(repeatPenalty: .infinity)),
        ("repeatPenalty", SamplingParameters(repeatPenalty: .nan)),
        ("repeatLastN", SamplingParameters(repeatLastN: -1)),
        ("repeatLastN", SamplingParameters(repeatLastN: SamplingParameters.maximumRepeatLastN + 1)),
    ]

    @Test("invalid values throw naming the parameter", arguments: invalidCases)
    func invalidValuesThrow(expectedName: String, parameters: SamplingParameters) {
        do {
            _ = try parameters.validated()
            Issue.record("expected \(expectedName) to be rejected")
        } catch let SamplingError.invalid(parameter, reason) {
            #expect(parameter == expectedName)
            #expect(!reason.isEmpty)
            let text = String(describing: SamplingError.invalid(parameter: parameter, reason: reason))
            #expect(text.contains(expectedName))
        } catch {
            Issue.record("unexpected error \(error)")
        }
        #expect(throws: SamplingError.self) {
            _ = try Sampler(parameters: parameters, vocabularySize: 10)
        }
    }

    @Test("sampler rejects an empty vocabulary")
    func emptyVocabulary() {
        #expect(throws: SamplingError.invalid(parameter: "vocabularySize",
                                              reason: "must be in 1...\(Int32.max), got 0")) {
            _ = try Sampler(parameters: SamplingParameters(), vocabularySize: 0)
        }
    }

    @Test("JSON round trip, and missing keys take the defaults")
    func codable() throws {
        let parameters = SamplingParameters(temperature: 0.3, topK: 7, topP: 0.5, minP: 0.2,
                                            repeatPenalty: 1.3, repeatLastN: 16, seed: 99)
        let data = try JSONEncoder().encode(parameters)
        #expect(try JSONDecoder().decode(SamplingParameters.self, from: data) == parameters)

        let partial = try JSONDecoder().decode(
            SamplingParameters.self, from: Data(#"{"temperature": 0, "seed": 5}"#.utf8))
        var expected = SamplingParameters(temperature: 0)
        expected.seed = 5
        #expect(partial == expected)
    }
}
