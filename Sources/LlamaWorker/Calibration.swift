import ClusterWire
import Foundation
import GGUF
import LlamaKernels
import LlamaModel

/// Times one layer of a given shape and weight type on this host, for placement by speed.
///
/// The layer has random weights (the speed of a layer does not depend on its values); its
/// file is written once into the cache directory and mapped like any model.
enum Calibration {
    /// Decodes are timed at a position of 256 (a typical history), a batch of 64 tokens
    /// from an empty cache; the best of a few runs counts.
    static func measure(_ request: CalibrationRequest, threads: Int, pool: ThreadPool, directory: String) throws
        -> CalibrationResult
    {
        let h = request.hyperparameters
        guard let type = GGMLType(rawValue: request.ggmlType), type.isSupported else {
            throw WorkerError.badOption("cannot calibrate with weight type \(request.ggmlType)")
        }
        let dim = Int(h.embeddingWidth), ffn = Int(h.feedForwardWidth)
        let heads = Int(h.headCount), kvHeads = Int(h.kvHeadCount)
        guard dim > 0, ffn > 0, heads > 0, kvHeads > 0, dim <= 65536, ffn <= 262_144, dim % heads == 0, heads % kvHeads == 0 else {
            throw WorkerError.badOption("cannot calibrate a layer of width \(dim), FFN \(ffn), \(heads)/\(kvHeads) heads")
        }
        let path = "\(directory)/calibration/layer-\(dim)-\(ffn)-\(heads)-\(kvHeads)-\(type).gguf"
        if !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            let model = SyntheticModel(dim: dim, layers: 1, heads: heads, kvHeads: kvHeads, ffn: ffn, context: 512, type: type)
            // Several workers may share the directory: each writes its own file, the first rename wins.
            let mine = path + ".\(getpid()).\(UInt32.random(in: 0 ... .max))"
            try model.write(to: mine, vocabularySize: 256, pool: pool)
            if (try? FileManager.default.moveItem(atPath: mine, toPath: path)) == nil { try? FileManager.default.removeItem(atPath: mine) }
        }
        let file = try GGUFFile(path: path)
        let config = try LlamaConfig(gguf: file)
        let slice = try LayerSlice(file: file, config: config, layers: LayerRange(0, 1), maxSequences: 1,
                                   contextLength: 512, maxBatch: 64, pool: pool)
        let (decode, prefill) = try slice.timePerToken(history: 256, batch: 64)
        return CalibrationResult(layerDecodeSeconds: decode, layerPrefillSeconds: prefill)
    }
}
