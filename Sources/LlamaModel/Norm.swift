import Foundation
import LlamaKernels

/// RMSNorm of `count` rows of width `dim`: out = x / sqrt(mean(x²) + eps) * weight.
func rmsNorm(_ x: UnsafePointer<Float>, count: Int, dim: Int, weight: [Float], epsilon: Float,
             out: UnsafeMutablePointer<Float>) {
    weight.withUnsafeBufferPointer { w in
        for t in 0..<count {
            let row = x + t * dim, o = out + t * dim
            let scale = 1 / (dotF32(row, row, count: dim) / Float(dim) + epsilon).squareRoot()
            for j in 0..<dim { o[j] = row[j] * scale * w[j] }
        }
    }
}

/// Compute threads to use when none are asked for: every core this process may run on.
public var defaultThreadCount: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }
