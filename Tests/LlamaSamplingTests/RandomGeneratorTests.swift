import TestSupport
import LlamaSampling
import Testing

@Suite("Random generators")
struct RandomGeneratorTests {
    @Test("SplitMix64 matches the published reference sequence for seed 1234567")
    func splitMixReference() {
        var generator = SplitMix64(seed: 1_234_567)
        let outputs = (0..<5).map { _ in generator.next() }
        #expect(outputs == [
            6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423,
            4_593_380_528_125_082_431, 16_408_922_859_458_223_821,
        ])
    }

    /// Reference values from a separate arbitrary-precision implementation of the
    /// xoshiro256** reference algorithm, state seeded with four SplitMix64 outputs.
    @Test("xoshiro256** matches the reference algorithm", arguments: [
        (UInt64(0), [UInt64(11_091_344_671_253_066_420), 13_793_997_310_169_335_082,
                     1_900_383_378_846_508_768, 7_684_712_102_626_143_532, 13_521_403_990_117_723_737]),
        (UInt64(42), [UInt64(1_546_998_764_402_558_742), 6_990_951_692_964_543_102,
                      12_544_586_762_248_559_009, 17_057_574_109_182_124_193, 18_295_552_978_065_317_476]),
    ])
    func xoshiroReference(seed: UInt64, expected: [UInt64]) {
        var generator = Xoshiro256StarStar(seed: seed)
        #expect((0..<5).map { _ in generator.next() } == expected)
    }

    @Test("unit doubles lie in [0, 1) with mean 1/2 and variance 1/12")
    func unitDoubles() {
        var generator = Xoshiro256StarStar(seed: 7)
        let count = 200_000
        var sum = 0.0
        var sumOfSquares = 0.0
        for _ in 0..<count {
            let value = generator.nextUnitDouble()
            #expect(value >= 0 && value < 1)
            sum += value
            sumOfSquares += value * value
        }
        let mean = sum / Double(count)
        let variance = sumOfSquares / Double(count) - mean * mean
        // Standard error of the mean is sqrt(1/12 / n) ~ 0.00065; allow 5 of them.
        #expect(abs(mean - 0.5) < 0.0033)
        #expect(abs(variance - 1.0 / 12.0) < 0.002)
    }
}
