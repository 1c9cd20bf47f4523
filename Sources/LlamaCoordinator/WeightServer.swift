import ClusterWire
import GGUF
import LlamaModel

/// Serves a worker's tensors chunk by chunk, only tensors of the layers it runs.
struct WeightServer {
    let file: GGUFFile
    /// Largest chunk sent at once.
    static let maximumChunkBytes = 16 << 20

    /// The reply to `request` from a worker running `layers`.
    func reply(to request: WeightRequest, workerName: String, layers: Range<Int>?) -> WireMessage {
        guard let layers, LlamaTensorName.names(layers: LayerRange(layers)).contains(request.tensorName),
              let t = file.tensor(named: request.tensorName) else {
            return .error(ErrorReport(code: .weights, message: "tensor \(request.tensorName.debugDescription) is not part of \(workerName)'s layers"))
        }
        guard request.offset <= UInt64(t.byteCount) else {
            return .error(ErrorReport(code: .weights, message: "offset \(request.offset) is past the end of \(t.name) (\(t.byteCount) bytes)"))
        }
        let offset = Int(request.offset)
        let n = min(Int(request.maxChunkBytes), t.byteCount - offset, Self.maximumChunkBytes)
        let data = file.data(for: t)
        return .tensorChunk(TensorChunk(tensorName: t.name, ggmlType: t.type.rawValue, shape: t.shape.map { UInt64($0) },
                                        offset: UInt64(offset), totalSize: UInt64(t.byteCount),
                                        data: Array(UnsafeRawBufferPointer(rebasing: data[offset..<offset + n]))))
    }
}
