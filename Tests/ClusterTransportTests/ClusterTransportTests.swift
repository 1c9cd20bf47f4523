import TestSupport
import ClusterTransport
import ClusterWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A PULL socket bound to a wildcard loopback port and a PUSH socket connected to it.
func pushPullPair(_ context: ZMQContext) throws -> (push: ZMQSocket, pull: ZMQSocket) {
    let pull = try context.socket(.pull)
    try pull.bind("tcp://127.0.0.1:*")
    let push = try context.socket(.push)
    try push.connect(try pull.lastEndpoint)
    return (push, pull)
}

@Suite("ZeroMQ transport", .serialized)
struct ClusterTransportTests {
    @Test("PUSH/PULL over loopback on a free port keeps order and multipart boundaries")
    func pushPull() throws {
        let context = try ZMQContext()
        let endpoint = try LoopbackPort.freeEndpoint()
        let pull = try context.socket(.pull)
        try pull.bind(endpoint)
        let push = try context.socket(.push)
        try push.connect(endpoint)
        #expect(try pull.lastEndpoint == endpoint)

        for index in 0..<100 {
            try push.send([[UInt8(index)], [], Array(repeating: UInt8(index), count: index * 100)])
        }
        var parts: [[UInt8]] = []
        for index in 0..<100 {
            #expect(try pull.receive(into: &parts, timeout: .seconds(5)))
            #expect(parts == [[UInt8(index)], [], Array(repeating: UInt8(index), count: index * 100)])
        }
        try push.send([[1, 2, 3]])
        #expect(try pull.receive(timeout: .seconds(5)) == [[1, 2, 3]])
    }

    @Test("ROUTER/DEALER exchange of protocol messages, addressed by routing id")
    func routerDealer() throws {
        let context = try ZMQContext()
        let router = try context.socket(.router)
        try router.set(.routerMandatory(true))
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = try router.lastEndpoint

        let dealer = try context.socket(.dealer)
        try dealer.set(.routingID(Array("worker-7".utf8)))
        #expect(try dealer.routingID == Array("worker-7".utf8))
        try dealer.connect(endpoint)

        let join = WireMessage.join(Join(workerName: "worker-7", threads: 2, memoryBudgetBytes: 1 << 30, cpuFeatures: "avx2", hasModelFile: false))
        try dealer.send([join.encode()])
        let request = try #require(try router.receive(timeout: .seconds(5)))
        #expect(request.count == 2)
        #expect(request[0] == Array("worker-7".utf8))
        #expect(try WireMessage.decode(request[1]) == join)

        let assignment = WireMessage.shardAssignment(ShardAssignment(
            layerBegin: 0, layerEnd: 4, modelFingerprint: "fp", activationDType: .f16, maxSequences: 4, contextLength: 256,
            input: PipelineEndpoint(address: "tcp://127.0.0.1:7000", mode: .bind),
            output: PipelineEndpoint(address: "tcp://127.0.0.1:7001", mode: .connect), streamWeights: false))
        try router.send([request[0], assignment.encode()])
        let reply = try #require(try dealer.receive(timeout: .seconds(5)))
        #expect(reply.count == 1)
        #expect(try WireMessage.decode(reply[0]) == assignment)

        // With ROUTER_MANDATORY, a message to an unknown peer fails instead of vanishing.
        let error = #expect(throws: ZMQError.self) { try router.send([Array("nobody".utf8), [1]]) }
        #expect(error?.errno == EHOSTUNREACH)
        #expect(error?.function == "zmq_send")
    }

    @Test("PAIR sockets talk both ways")
    func pair() throws {
        let context = try ZMQContext()
        let a = try context.socket(.pair)
        try a.bind("tcp://127.0.0.1:*")
        let b = try context.socket(.pair)
        try b.connect(try a.lastEndpoint)
        try a.send([[1]])
        #expect(try b.receive(timeout: .seconds(5)) == [[1]])
        try b.send([[2], [3]])
        #expect(try a.receive(timeout: .seconds(5)) == [[2], [3]])
    }

    @Test("receive times out with nil after about the timeout")
    func receiveTimeout() throws {
        let context = try ZMQContext()
        let (_, pull) = try pushPullPair(context)
        let clock = ContinuousClock()
        let start = clock.now
        let result = try pull.receive(timeout: .milliseconds(80))
        let elapsed = clock.now - start
        #expect(result == nil)
        #expect(elapsed >= .milliseconds(75))
        #expect(elapsed < .seconds(2))
        #expect(try pull.receive(timeout: .zero) == nil)
    }

    @Test("send with a timeout gives up when no peer can take the message")
    func sendTimeout() throws {
        let context = try ZMQContext()
        let push = try context.socket(.push)
        try push.set(.immediate(true))
        try push.connect(try LoopbackPort.freeEndpoint())  // nobody listens there
        let clock = ContinuousClock()
        let start = clock.now
        #expect(try push.send([[1, 2, 3]], timeout: .milliseconds(60)) == false)
        #expect(clock.now - start >= .milliseconds(55))

        try push.set(.sendTimeout(milliseconds: 30))
        let error = #expect(throws: ZMQError.self) { try push.send([[1]]) }
        #expect(error?.isWouldBlock == true)
    }

    @Test("a poller reports which socket has a message")
    func poller() throws {
        let context = try ZMQContext()
        let first = try pushPullPair(context)
        let second = try pushPullPair(context)
        let poller = ZMQPoller()
        #expect(poller.register(first.pull) == 0)
        #expect(poller.register(second.pull) == 1)

        #expect(try poller.poll(timeout: .milliseconds(20)) == 0)
        #expect(poller.readyIndices.isEmpty)

        try second.push.send([[42]])
        #expect(try poller.poll(timeout: .seconds(5)) == 1)
        #expect(poller.readyIndices == [1])
        #expect(poller.isReadable(1) && !poller.isReadable(0))
        #expect(try poller.socket(at: 1).receive(timeout: .zero) == [[42]])

        try first.push.send([[1]])
        try second.push.send([[2]])
        var seen: Set<Int> = []
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(5)
        while seen.count < 2 && clock.now < deadline {
            try poller.poll(timeout: .seconds(1))
            for index in poller.readyIndices {
                _ = try poller.socket(at: index).receive(timeout: .zero)
                seen.insert(index)
            }
        }
        #expect(seen == [0, 1])
    }

    @Test("garbage on a socket is reported by decode and the socket keeps working")
    func garbageThenValid() throws {
        let context = try ZMQContext()
        let (push, pull) = try pushPullPair(context)
        let codec = ActivationCodec()
        var frame = ActivationFrame()
        var generator = SeededGenerator(seed: 1)
        let garbage = (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try push.send([garbage])
        try push.send([Array("not a frame".utf8)])
        let valid = ActivationFrame(stepID: 5, width: 4, dtype: .f16, sequenceIDs: [0], positions: [3], values: [1, 2, 3, 4])
        var bytes: [UInt8] = []
        codec.encode(valid, into: &bytes)
        try bytes.withUnsafeBytes { try push.send($0, more: false) }

        var parts: [[UInt8]] = []
        for _ in 0..<2 {
            #expect(try pull.receive(into: &parts, timeout: .seconds(5)))
            #expect(throws: WireError.self) { try parts[0].withUnsafeBytes { try codec.decode($0, into: &frame) } }
        }
        #expect(try pull.receive(into: &parts, timeout: .seconds(5)))
        #expect(try parts[0].withUnsafeBytes { try codec.decode($0, into: &frame) } == .activation)
        #expect(frame == valid)
    }

    @Test("oversized messages are refused by ZMQ_MAXMSGSIZE")
    func maxMessageSize() throws {
        let context = try ZMQContext()
        let pull = try context.socket(.pull)
        try pull.set(.maxMessageSize(1000))
        #expect(try pull.maxMessageSize == 1000)
        try pull.bind("tcp://127.0.0.1:*")
        let push = try context.socket(.push)
        try push.connect(try pull.lastEndpoint)
        try push.send([[UInt8](repeating: 1, count: 2000)])
        #expect(try pull.receive(timeout: .milliseconds(300)) == nil)
    }

    @Test("options read back what was set")
    func options() throws {
        let context = try ZMQContext()
        let socket = try context.socket(.dealer)
        #expect(try socket.linger == 0)
        try socket.set(.sendHighWaterMark(17))
        try socket.set(.receiveHighWaterMark(23))
        try socket.set(.immediate(true))
        try socket.set(.heartbeatInterval(milliseconds: 250))
        try socket.set(.heartbeatTimeout(milliseconds: 1500))
        try socket.set(.heartbeatTTL(milliseconds: 3000))
        try socket.set(.reconnectInterval(milliseconds: 50))
        #expect(try socket.sendHighWaterMark == 17)
        #expect(try socket.receiveHighWaterMark == 23)
        #expect(try socket.immediate)
        #expect(try socket.heartbeatInterval == 250)
        #expect(try socket.heartbeatTimeout == 1500)
        let error = #expect(throws: ZMQError.self) { try socket.set(.routingID([])) }
        #expect(error?.errno == EINVAL)
        #expect(error?.function == "zmq_setsockopt")
    }

    @Test("errors carry the function, errno and library text")
    func errors() async throws {
        let context = try ZMQContext()
        let socket = try context.socket(.pull)
        let bad = #expect(throws: ZMQError.self) { try socket.bind("nonsense://x") }
        #expect(bad?.function == "zmq_bind")
        #expect(bad?.errno == EPROTONOSUPPORT)
        #expect(bad?.message.isEmpty == false)
        #expect(bad?.description.contains("nonsense://x") == true)

        try socket.bind("tcp://127.0.0.1:*")
        let endpoint = try socket.lastEndpoint
        let other = try context.socket(.pull)
        let inUse = #expect(throws: ZMQError.self) { try other.bind(endpoint) }
        #expect(inUse?.errno == EADDRINUSE)

        // After unbinding, the address becomes free for another socket (the listener is
        // closed by the I/O thread, so it may take a moment).
        try socket.unbind(endpoint)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(5)
        var rebound = false
        while !rebound && clock.now < deadline {
            do {
                try other.bind(endpoint)
                rebound = true
            } catch let error as ZMQError where error.errno == EADDRINUSE {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        #expect(rebound)
        let notBound = #expect(throws: ZMQError.self) { try socket.unbind(endpoint) }
        #expect(notBound?.function == "zmq_unbind")
    }

    @Test("free loopback ports are bindable and distinct from bound ones")
    func freePorts() throws {
        let context = try ZMQContext()
        let port = try LoopbackPort.pickFree()
        #expect(port > 0)
        let socket = try context.socket(.pull)
        try socket.bind("tcp://127.0.0.1:\(port)")
        #expect(try LoopbackPort.pickFree() != port)
    }
}

/// SplitMix64, a seeded generator for reproducible test data.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
