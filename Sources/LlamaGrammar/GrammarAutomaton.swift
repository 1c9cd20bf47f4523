// MARK: - Parse states as a lazily built automaton over bytes

/// The matching engine shared by a matcher and its copies.
///
/// A parse state is a set of *stacks* (as in llama.cpp): each stack's top is the position
/// of a terminal that may match the next character, and below it the positions to return
/// to when the current alternatives end; the empty stack (`accept`) means the text so far
/// is a complete sentence. Stacks are linked lists of *frames* `(position, next)` that are
/// hash-consed, so equal stacks are equal frame indices and a state is a sorted list of
/// frame indices plus the progress of a partly read UTF-8 character. States are interned
/// and numbered, and the transition of a state on a byte is computed once and remembered
/// (`transitions`, 256 entries a state), which makes the grammar act like a deterministic
/// automaton over bytes that is built only as far as the text and the masks explore it.
///
/// All access goes through `lock`; the matcher takes it once per public call.
final class GrammarAutomaton: @unchecked Sendable {
    /// The empty stack (as a head of a state): the text can end here.
    static let accept: Int32 = -1
    /// A transition to no state: the byte cannot continue the text.
    static let dead: Int32 = -1
    /// A transition not computed yet.
    static let unknown: Int32 = -2

    static let canEndFlag: UInt8 = 1
    static let finishedFlag: UInt8 = 2

    let program: CompiledGrammar
    let lock = Lock()

    // Frames: (position, next frame or -1), hash-consed through `frameTable`.
    private var framePosition: [Int32] = []
    private var frameNext: [Int32] = []
    private var frameTable = [Int32](repeating: -1, count: 1024)

    // States: heads `heads[headStart[s] ..< headStart[s + 1]]`, packed partial UTF-8, flags.
    private var headStart: [Int32] = [0]
    private var heads: [Int32] = []
    private var partial: [UInt32] = []
    private var flags: [UInt8] = []
    private var stateTable = [Int32](repeating: -1, count: 1024)

    /// `transitions[s * 256 + byte]`: the next state, `dead` or `unknown`.
    private(set) var transitions: UnsafeMutablePointer<Int32>
    private var transitionCapacity = 64  // in states

    /// Heads under construction.
    private var scratch: [Int32] = []
    /// The `(position, tail)` pairs `expand` has visited since the heads under construction
    /// were started: an ambiguous grammar reaches the same pair along many derivations (an
    /// empty literal under 18 `?`, repeated `{1,5}`, along 19^5), and each adds the same heads.
    private var expanded = Set<UInt64>()
    /// Pairs `expand` has still to follow.
    private var pending: [UInt64] = []

    /// Most `(position, tail)` pairs the heads of one state may take to find. Distinct stacks
    /// can still be exponentially many (`x1 ::= x0 "a" | x0 "b"`, `x2 ::= x1 "a" | x1 "b"`,
    /// ... has 2^k at its start); past the limit the state is given up (see `gaveUp`).
    static let expansionLimit = 1 << 18
    /// Most pairs all the states of one automaton may visit together. Each state stays under
    /// `expansionLimit`, but a grammar can make every state large (`.??{10000}`: ten thousand
    /// heads in every state, hundreds of states along a text): without a total, one request
    /// could keep the scheduler's thread for minutes. Past it every state still to be built is
    /// given up, so the grammar allows no more text and its choice ends. Ordinary grammars use a
    /// small fraction; the pathological one above reaches it in its first mask, after about 10 s
    /// of work on a 2-core machine (bounded, not cheap).
    static let workLimit = 1 << 22
    /// Pairs visited by all the states built so far.
    private(set) var work = 0
    /// Whether the last state built (`initialState` or a transition) passed
    /// `expansionLimit`: a transition is then `dead`, and the initial state has no heads.
    private(set) var gaveUp = false

    init(program: CompiledGrammar) {
        self.program = program
        transitions = .allocate(capacity: transitionCapacity * 256)
    }

    deinit {
        transitions.deallocate()
        maskBuffers.release()
    }

    /// Buffers of the mask walk (see `GrammarAutomaton+Mask.swift`).
    var maskBuffers = MaskBuffers()

    var stateCount: Int { partial.count }
    var frameCount: Int { framePosition.count }

    @inline(__always)
    func flags(of state: Int32) -> UInt8 { flags[Int(state)] }

    // MARK: - States

    /// The state before any text.
    func initialState() -> Int32 {
        scratch.removeAll(keepingCapacity: true)
        expanded.removeAll(keepingCapacity: true)
        gaveUp = false
        let rule = Int(program.root)
        for alternative in program.ruleAlternatives[rule]..<program.ruleAlternatives[rule + 1] {
            expand(program.alternativeStarts[Int(alternative)], tail: -1)
        }
        if gaveUp { scratch.removeAll(keepingCapacity: true) }
        return internState(partial: 0)
    }

    /// The state after `byte` in `state`, or `dead`.
    @inline(__always)
    func transition(_ state: Int32, _ byte: UInt8) -> Int32 {
        let known = transitions[Int(state) &* 256 &+ Int(byte)]
        return known != GrammarAutomaton.unknown ? known : computeTransition(state, byte)
    }

    /// Computes, remembers and returns a transition. May grow `transitions`.
    func computeTransition(_ state: Int32, _ byte: UInt8) -> Int32 {
        let result = nextState(state, byte)
        transitions[Int(state) * 256 + Int(byte)] = result
        return result
    }

    private func nextState(_ state: Int32, _ byte: UInt8) -> Int32 {
        let progress = partial[Int(state)]
        guard let step = UTF8Step(after: progress, byte: byte) else { return GrammarAutomaton.dead }
        scratch.removeAll(keepingCapacity: true)
        expanded.removeAll(keepingCapacity: true)
        gaveUp = false
        let first = Int(headStart[Int(state)])
        let last = Int(headStart[Int(state) + 1])
        switch step {
        case .complete(let code):
            for index in first..<last {
                let head = heads[index]
                guard head >= 0 else { continue }
                let position = framePosition[Int(head)]
                if program.sets[Int(program.elements[Int(position)])].contains(code) {
                    expand(position + 1, tail: frameNext[Int(head)])
                }
            }
            if gaveUp { return GrammarAutomaton.dead }
        case .partial(let next, let low, let high):
            for index in first..<last {
                let head = heads[index]
                guard head >= 0 else { continue }
                let position = framePosition[Int(head)]
                if program.sets[Int(program.elements[Int(position)])].intersects(low, high) {
                    scratch.append(head)
                }
            }
            if scratch.isEmpty { return GrammarAutomaton.dead }
            return internState(partial: next)
        }
        if scratch.isEmpty { return GrammarAutomaton.dead }
        return internState(partial: 0)
    }

    /// Adds to `scratch` the heads reached by continuing at `position` with the stack
    /// `tail` below: terminals become heads, rule references push their return position
    /// (unless it ends the alternative: a tail call) and expand every alternative, and the
    /// end of an alternative pops the stack. A pair visited before adds nothing new. Works
    /// from a list of pairs rather than by recursion, since a run of rules that match the
    /// empty text (`x?{10000}`) is followed pair after pair without consuming anything.
    private func expand(_ position: Int32, tail: Int32) {
        visit(position, tail)
        while let key = pending.popLast() {
            let position = Int32(bitPattern: UInt32(truncatingIfNeeded: key >> 32))
            let tail = Int32(bitPattern: UInt32(truncatingIfNeeded: key))
            let code = program.elements[Int(position)]
            if code >= 0 {
                scratch.append(internFrame(position, tail))
            } else if code == CompiledGrammar.end {
                if tail < 0 {
                    scratch.append(GrammarAutomaton.accept)
                } else {
                    visit(framePosition[Int(tail)], frameNext[Int(tail)])
                }
            } else {
                let rule = Int(CompiledGrammar.rule(of: code))
                let returnTail = program.elements[Int(position) + 1] == CompiledGrammar.end
                    ? tail : internFrame(position + 1, tail)
                for alternative in program.ruleAlternatives[rule]..<program.ruleAlternatives[rule + 1] {
                    visit(program.alternativeStarts[Int(alternative)], returnTail)
                }
            }
        }
    }

    /// Queues the pair for `expand` unless it was visited before (or the state passes
    /// `expansionLimit`, or the automaton `workLimit`).
    @inline(__always)
    private func visit(_ position: Int32, _ tail: Int32) {
        guard expanded.count < GrammarAutomaton.expansionLimit, work < GrammarAutomaton.workLimit else {
            gaveUp = true
            return
        }
        let key = UInt64(UInt32(bitPattern: position)) << 32 | UInt64(UInt32(bitPattern: tail))
        if expanded.insert(key).inserted {
            pending.append(key)
            work += 1
        }
    }

    /// Interns the heads in `scratch` (sorting and de-duplicating them) with `partial`.
    private func internState(partial progress: UInt32) -> Int32 {
        scratch.sort()
        var unique = 0
        for index in scratch.indices where index == 0 || scratch[index] != scratch[unique - 1] {
            scratch[unique] = scratch[index]
            unique += 1
        }
        scratch.removeLast(scratch.count - unique)

        var hash = UInt64(progress) &* 0x9E37_79B9_7F4A_7C15
        for head in scratch { hash = (hash ^ UInt64(UInt32(bitPattern: head))) &* 0xBF58_476D_1CE4_E5B9 }
        let mask = stateTable.count - 1
        var slot = Int(truncatingIfNeeded: hash >> 20) & mask
        while true {
            let candidate = stateTable[slot]
            if candidate < 0 { break }
            if partial[Int(candidate)] == progress && sameHeads(candidate) { return candidate }
            slot = (slot + 1) & mask
        }
        let state = Int32(partial.count)
        heads.append(contentsOf: scratch)
        headStart.append(Int32(heads.count))
        partial.append(progress)
        let canEnd = progress == 0 && scratch.first == GrammarAutomaton.accept
        flags.append((canEnd ? GrammarAutomaton.canEndFlag : 0)
                     | (canEnd && scratch.count == 1 ? GrammarAutomaton.finishedFlag : 0))
        reserveTransitions(for: partial.count)
        (transitions + Int(state) * 256).initialize(repeating: GrammarAutomaton.unknown, count: 256)
        stateTable[slot] = state
        if partial.count * 2 > stateTable.count { rehashStates() }
        return state
    }

    private func sameHeads(_ state: Int32) -> Bool {
        let first = Int(headStart[Int(state)])
        let count = Int(headStart[Int(state) + 1]) - first
        guard count == scratch.count else { return false }
        for index in 0..<count where heads[first + index] != scratch[index] { return false }
        return true
    }

    private func reserveTransitions(for states: Int) {
        guard states > transitionCapacity else { return }
        let capacity = transitionCapacity * 2
        let grown = UnsafeMutablePointer<Int32>.allocate(capacity: capacity * 256)
        grown.moveInitialize(from: transitions, count: transitionCapacity * 256)
        transitions.deallocate()
        transitions = grown
        transitionCapacity = capacity
    }

    private func rehashStates() {
        stateTable = [Int32](repeating: -1, count: stateTable.count * 2)
        let mask = stateTable.count - 1
        for state in 0..<Int32(partial.count) {
            var hash = UInt64(partial[Int(state)]) &* 0x9E37_79B9_7F4A_7C15
            for index in Int(headStart[Int(state)])..<Int(headStart[Int(state) + 1]) {
                hash = (hash ^ UInt64(UInt32(bitPattern: heads[index]))) &* 0xBF58_476D_1CE4_E5B9
            }
            var slot = Int(truncatingIfNeeded: hash >> 20) & mask
            while stateTable[slot] >= 0 { slot = (slot + 1) & mask }
            stateTable[slot] = state
        }
    }

    // MARK: - Frames

    private func internFrame(_ position: Int32, _ next: Int32) -> Int32 {
        let mask = frameTable.count - 1
        var slot = frameSlot(position, next, mask)
        while true {
            let frame = frameTable[slot]
            if frame < 0 { break }
            if framePosition[Int(frame)] == position && frameNext[Int(frame)] == next { return frame }
            slot = (slot + 1) & mask
        }
        let frame = Int32(framePosition.count)
        framePosition.append(position)
        frameNext.append(next)
        frameTable[slot] = frame
        if framePosition.count * 2 > frameTable.count {
            frameTable = [Int32](repeating: -1, count: frameTable.count * 2)
            let mask = frameTable.count - 1
            for index in framePosition.indices {
                var slot = frameSlot(framePosition[index], frameNext[index], mask)
                while frameTable[slot] >= 0 { slot = (slot + 1) & mask }
                frameTable[slot] = Int32(index)
            }
        }
        return frame
    }

    @inline(__always)
    private func frameSlot(_ position: Int32, _ next: Int32, _ mask: Int) -> Int {
        let key = UInt64(UInt32(bitPattern: position)) << 32 | UInt64(UInt32(bitPattern: next))
        return Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 24) & mask
    }

    // MARK: - Moving a state to a fresh automaton

    /// Re-creates `state` in `other` (used to drop a cache that grew too large) and
    /// returns its number there.
    func transplant(_ state: Int32, into other: GrammarAutomaton) -> Int32 {
        var copied: [Int32] = []
        for index in Int(headStart[Int(state)])..<Int(headStart[Int(state) + 1]) {
            let head = heads[index]
            guard head >= 0 else {
                copied.append(GrammarAutomaton.accept)
                continue
            }
            var chain: [Int32] = []
            var frame = head
            while frame >= 0 {
                chain.append(frame)
                frame = frameNext[Int(frame)]
            }
            var next: Int32 = -1
            for frame in chain.reversed() { next = other.internFrame(framePosition[Int(frame)], next) }
            copied.append(next)
        }
        other.scratch = copied
        return other.internState(partial: partial[Int(state)])
    }
}
