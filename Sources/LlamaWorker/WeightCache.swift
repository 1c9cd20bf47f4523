import ClusterWire
import Foundation
import GGUF
import LlamaModel
import Logging

/// A worker's copy of its layers' tensors, streamed from the coordinator and kept as a GGUF
/// file (the model's configuration plus only those tensors) in a cache directory.
struct WeightCache {
    static let chunkBytes = 4 << 20
    let directory: String
    let logger: Logger
    /// Most bytes of weights this worker accepts (what it offered the cluster).
    let memoryBudget: Int

    init(directory: String, logger: Logger, memoryBudget: Int = .max) {
        self.directory = directory
        self.logger = logger
        self.memoryBudget = memoryBudget
    }

    func path(fingerprint: String, layers: LayerRange) -> String {
        "\(directory)/\(fingerprint)/layers-\(layers.lo)-\(layers.hi - 1).gguf"
    }

    /// The cached file for the assignment, fetching it through `request` first when absent or damaged.
    func obtain(assignment a: ShardAssignment, workerName: String,
                request: @escaping (WeightRequest) throws -> TensorChunk) throws -> GGUFFile {
        let layers = LayerRange(Int(a.layerBegin), Int(a.layerEnd))
        let path = path(fingerprint: a.modelFingerprint, layers: layers)
        if FileManager.default.fileExists(atPath: path) {
            do {
                let file = try GGUFFile(path: path)
                if file.metadata["llamacluster.fingerprint"]?.string == a.modelFingerprint,
                   Set(LlamaTensorName.names(layers: layers)).isSubset(of: Set(file.tensors.map(\.name))) {
                    logger.info("using cached weights \(path)")
                    return file
                }
                logger.warning("cached weights \(path) do not match the assignment; fetching again")
            } catch {
                logger.warning("cached weights \(path) are damaged (\(error)); fetching again")
            }
            try? FileManager.default.removeItem(atPath: path)
        }
        guard let hp = a.hyperparameters else {
            throw WorkerError.weights("the assignment carries no model configuration to stream weights with")
        }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)

        let writer = GGUFWriter()
        writer.set("general.architecture", .string("llama"))
        writer.set("general.name", .string("layers \(layers.lo)-\(layers.hi - 1) streamed to \(workerName)"))
        writer.set("llama.vocab_size", .uint32(hp.vocabularySize))
        writer.set("llama.context_length", .uint32(hp.trainingContextLength))
        writer.set("llama.embedding_length", .uint32(hp.embeddingWidth))
        writer.set("llama.block_count", .uint32(hp.layerCount))
        writer.set("llama.feed_forward_length", .uint32(hp.feedForwardWidth))
        writer.set("llama.attention.head_count", .uint32(hp.headCount))
        writer.set("llama.attention.head_count_kv", .uint32(hp.kvHeadCount))
        writer.set("llama.attention.layer_norm_rms_epsilon", .float32(hp.rmsNormEpsilon))
        writer.set("llama.rope.freq_base", .float32(hp.ropeFreqBase))
        writer.set("llama.rope.dimension_count", .uint32(hp.ropeDimensionCount))
        writer.set("llamacluster.fingerprint", .string(a.modelFingerprint))
        writer.set("llamacluster.layers", .string("\(layers.lo)-\(layers.hi - 1)"))

        // First the table: type and shape of each tensor (a request for zero bytes).
        var total = 0
        var infos: [(String, GGMLType, [Int], Int)] = []
        for name in LlamaTensorName.names(layers: layers) {
            let info = try request(WeightRequest(tensorName: name, offset: 0, maxChunkBytes: 0))
            guard let type = GGMLType(rawValue: info.ggmlType), type.isSupported else {
                throw WorkerError.weights("tensor \(name) has unsupported type \(info.ggmlType)")
            }
            let shape = info.shape.map { Int($0) }
            guard !shape.isEmpty, shape.allSatisfy({ $0 > 0 }), type.byteCount(elements: shape.reduce(1, *)) == Int(info.totalSize) else {
                throw WorkerError.weights("tensor \(name): shape \(shape) of \(type) disagrees with its size \(info.totalSize)")
            }
            infos.append((name, type, shape, Int(info.totalSize)))
            total += Int(info.totalSize)
            // Checked before anything is allocated: the sizes come from the other end.
            guard total <= memoryBudget else {
                throw WorkerError.weights("layers \(layers) need more than the \(memoryBudget / 1_048_576) MiB this worker offers")
            }
        }
        logger.info("fetching \(infos.count) tensors (\(total / 1_048_576) MiB) for layers \(layers) from the coordinator")
        var received = 0
        var lastReport = 0
        let start = Date()
        for (name, type, shape, size) in infos {
            writer.addTensor(name: name, type: type, shape: shape) { buffer in
                var offset = 0
                while offset < size {
                    let chunk = try request(WeightRequest(tensorName: name, offset: UInt64(offset), maxChunkBytes: UInt32(Self.chunkBytes)))
                    guard chunk.tensorName == name, Int(chunk.offset) == offset, !chunk.data.isEmpty,
                          offset + chunk.data.count <= size else {
                        throw WorkerError.weights("tensor \(name): got a chunk for \(chunk.tensorName) at \(chunk.offset) (\(chunk.data.count) bytes) while expecting offset \(offset)")
                    }
                    chunk.data.withUnsafeBytes { src in
                        UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + src.count]).copyMemory(from: src)
                    }
                    offset += chunk.data.count
                    received += chunk.data.count
                    if received - lastReport >= max(total / 20, 1) || received == total {
                        lastReport = received
                        let rate = Double(received) / max(Date().timeIntervalSince(start), 1e-6) / 1_048_576
                        logger.info("weights: \(received * 100 / max(total, 1)) % (\(received / 1_048_576)/\(total / 1_048_576) MiB, \(String(format: "%.0f", rate)) MiB/s)")
                    }
                }
            }
        }
        try writer.write(to: path)
        logger.info("stored weights in \(path)")
        return try GGUFFile(path: path)
    }
}
