// MARK: - Lowering GBNF to the flat form

/// Turns parsed rules into a `CompiledGrammar`: literals become runs of one-character
/// terminals, groups with several alternatives and repetitions become generated rules
/// (`e*` is `r ::= e r | ε`; `e{m,n}` is m copies of `e` followed by nested optional
/// rules, which keeps the expansion unambiguous), and references are resolved. Then the
/// grammar is checked for left recursion.
struct GrammarLowering {
    enum Symbol: Hashable {
        case set(CodePointSet)
        case rule(Int)
    }

    /// Where a rule came from, for error messages.
    enum Origin {
        case defined(SourcePlace)
        case group(owner: String)
        case repetition(SourcePlace, unbounded: Bool)
    }

    /// Rule names; a generated rule holds its owner's name (see `displayName`), which shares
    /// the owner's storage instead of making a string for each of thousands of rules.
    private var names: [String] = []
    private var origins: [Origin] = []
    private var bodies: [[[Symbol]]] = []
    private var indexByName: [String: Int] = [:]
    /// Symbols of all bodies so far (counted as they are made, before they are kept).
    private var size = 0

    static func compile(_ rules: [GBNFRule], root: String) throws -> CompiledGrammar {
        var lowering = GrammarLowering()
        for rule in rules {
            if let existing = lowering.indexByName[rule.name], case .defined(let first) = lowering.origins[existing] {
                throw GrammarError(.syntax, "rule '\(rule.name)' is defined twice (first at line \(first.line))",
                                   line: rule.place.line, column: rule.place.column)
            }
            lowering.indexByName[rule.name] = lowering.addRule(named: rule.name, origin: .defined(rule.place))
        }
        for rule in rules {
            let body = try lowering.lowerAlternatives(rule.body, owner: rule.name)
            lowering.bodies[lowering.indexByName[rule.name]!] = body
        }
        guard let rootIndex = lowering.indexByName[root] else {
            throw GrammarError(.missingRoot, rules.isEmpty
                ? "the grammar defines no rules (it needs a rule '\(root)')"
                : "the grammar has no rule named '\(root)' to start from")
        }
        try lowering.checkLeftRecursion()
        return lowering.flatten(root: rootIndex)
    }

    private mutating func addRule(named name: String, origin: Origin) -> Int {
        names.append(name)
        origins.append(origin)
        bodies.append([])
        return names.count - 1
    }

    private mutating func addGeneratedRule(owner: String, origin: Origin, body: [[Symbol]]) -> Int {
        let index = addRule(named: owner, origin: origin)
        bodies[index] = body
        return index
    }

    /// The name of rule `index` in messages: a generated rule is `owner-index`.
    private func displayName(_ index: Int) -> String {
        if case .defined = origins[index] { return names[index] }
        return "\(names[index])-\(index)"
    }

    // MARK: - Expressions

    private mutating func lowerAlternatives(_ expression: GBNFExpression, owner: String) throws -> [[Symbol]] {
        if case .alternatives(let alternatives) = expression {
            return try alternatives.map { try lowerSequence($0, owner: owner) }
        }
        return [try lowerSequence(expression, owner: owner)]
    }

    private mutating func lowerSequence(_ expression: GBNFExpression, owner: String) throws -> [Symbol] {
        switch expression {
        case .sequence(let items):
            var symbols: [Symbol] = []
            for item in items { symbols += try lowerSequence(item, owner: owner) }
            return symbols
        case .literal(let codes):
            try charge(codes.count)
            return codes.map { .set(CodePointSet(single: $0)) }
        case .characterClass(let set):
            try charge(1)
            return [.set(set)]
        case .ruleReference(let name, let place):
            guard let index = indexByName[name] else {
                throw GrammarError(.undefinedRule, "undefined rule '\(name)' (referenced in rule '\(owner)')",
                                   line: place.line, column: place.column)
            }
            try charge(1)
            return [.rule(index)]
        case .alternatives(let alternatives):
            try charge(1)
            let body = try alternatives.map { try lowerSequence($0, owner: owner) }
            return [.rule(addGeneratedRule(owner: owner, origin: .group(owner: owner), body: body))]
        case .repetition(let inner, let min, let max, let place):
            var unit = try lowerSequence(inner, owner: owner)
            let copies = min + (max.map { $0 - min } ?? 1)
            if unit.count > 1 && copies > 1 {
                unit = [.rule(addGeneratedRule(owner: owner, origin: .group(owner: owner), body: [unit]))]
            }
            // m copies, then one more (with a reference) for each optional or the star.
            try charge(min * unit.count + (copies - min) * (unit.count + 2), place)
            var symbols: [Symbol] = []
            for _ in 0..<min { symbols += unit }
            if let max {
                // Nested optionals: r1 ::= e | ε, rk ::= e r(k-1) | ε.
                var optional: Int? = nil
                for _ in 0..<(max - min) {
                    let rest = optional.map { [Symbol.rule($0)] } ?? []
                    optional = addGeneratedRule(owner: owner, origin: .repetition(place, unbounded: false),
                                                body: [unit + rest, []])
                }
                if let optional { symbols.append(.rule(optional)) }
            } else {
                let star = addRule(named: owner, origin: .repetition(place, unbounded: true))
                bodies[star] = [unit + [.rule(star)], []]
                symbols.append(.rule(star))
            }
            return symbols
        }
    }

    /// Counts `count` more symbols, throwing once the grammar passes `maxCompiledSize`
    /// (`"ab"{10000}` written a few thousand times would take gigabytes).
    private mutating func charge(_ count: Int, _ place: SourcePlace? = nil) throws {
        size += count
        guard size <= maxCompiledSize else {
            throw GrammarError(.syntax, "the grammar is too large: its repetitions and literals expand to more than "
                               + "\(maxCompiledSize) terminals and references", line: place?.line, column: place?.column)
        }
    }

    // MARK: - Left recursion

    /// Rejects rules that can reach themselves before consuming a character, since a
    /// top-down matcher would expand them forever.
    private func checkLeftRecursion() throws {
        var nullable = [Bool](repeating: false, count: bodies.count)
        var changed = true
        while changed {
            changed = false
            for rule in bodies.indices where !nullable[rule] {
                let canBeEmpty = bodies[rule].contains { alternative in
                    alternative.allSatisfy { if case .rule(let r) = $0 { return nullable[r] } else { return false } }
                }
                if canBeEmpty {
                    nullable[rule] = true
                    changed = true
                }
            }
        }
        // Edges to the rules an alternative can start with.
        var edges = [[Int]](repeating: [], count: bodies.count)
        for rule in bodies.indices {
            var targets = Set<Int>()
            for alternative in bodies[rule] {
                for symbol in alternative {
                    guard case .rule(let target) = symbol else { break }
                    targets.insert(target)
                    if !nullable[target] { break }
                }
            }
            edges[rule] = targets.sorted()
        }
        // Iterative depth-first search; a back edge closes a cycle.
        var color = [UInt8](repeating: 0, count: bodies.count)  // 0 new, 1 on path, 2 done
        for start in bodies.indices where color[start] == 0 {
            var path: [(rule: Int, next: Int)] = [(start, 0)]
            color[start] = 1
            while let top = path.last {
                if top.next == edges[top.rule].count {
                    color[top.rule] = 2
                    path.removeLast()
                    continue
                }
                path[path.count - 1].next += 1
                let target = edges[top.rule][top.next]
                if color[target] == 1 {
                    throw leftRecursionError(Array(path.map(\.rule).drop { $0 != target }))
                }
                if color[target] == 0 {
                    color[target] = 1
                    path.append((target, 0))
                }
            }
        }
    }

    private func leftRecursionError(_ cycle: [Int]) -> GrammarError {
        for rule in cycle {
            if case .repetition(let place, true) = origins[rule] {
                return GrammarError(.leftRecursion,
                    "this repetition repeats an expression that can match the empty text, so matching could loop forever",
                    line: place.line, column: place.column)
            }
        }
        let defined = cycle.filter { if case .defined = origins[$0] { return true } else { return false } }
        let shown = defined.isEmpty ? cycle : defined
        var place: SourcePlace? = nil
        if case .defined(let first) = origins[shown[0]] { place = first }
        let route = shown.map(displayName).joined(separator: " -> ")
        return GrammarError(.leftRecursion,
            "left recursion: rule '\(displayName(shown[0]))' can reach itself without consuming a character "
                + "(\(route) -> \(displayName(shown[0]))); rewrite it with repetition, e.g. list ::= item (\",\" item)*",
            line: place?.line, column: place?.column)
    }

    // MARK: - Flattening

    private func flatten(root: Int) -> CompiledGrammar {
        var elements: [Int32] = []
        var alternativeStarts: [Int32] = []
        var ruleAlternatives: [Int32] = [0]
        var sets: [CodePointSet] = []
        var setIndex: [CodePointSet: Int32] = [:]
        for body in bodies {
            for alternative in body {
                alternativeStarts.append(Int32(elements.count))
                for symbol in alternative {
                    switch symbol {
                    case .rule(let rule):
                        elements.append(CompiledGrammar.code(ofRule: Int32(rule)))
                    case .set(let set):
                        if let index = setIndex[set] {
                            elements.append(index)
                        } else {
                            setIndex[set] = Int32(sets.count)
                            elements.append(Int32(sets.count))
                            sets.append(set)
                        }
                    }
                }
                elements.append(CompiledGrammar.end)
            }
            ruleAlternatives.append(Int32(alternativeStarts.count))
        }
        return CompiledGrammar(elements: elements, alternativeStarts: alternativeStarts,
                               ruleAlternatives: ruleAlternatives, sets: sets, ruleNames: names,
                               root: Int32(root))
    }
}
