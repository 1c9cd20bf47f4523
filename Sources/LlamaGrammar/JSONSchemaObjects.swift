// MARK: - Objects of a JSON schema

extension SchemaConverter {
    /// Where the members of an object go beyond its named properties.
    private enum Additional {
        case none
        case any
        case schema(JSONSchemaValue)
    }

    /// A rule for objects under `schema`: required members first (in the order of
    /// `properties`), then the optional ones (each may be left out), then any additional
    /// members, separated by commas with bounded whitespace.
    mutating func objectRule(_ schema: JSONSchemaValue, path: String, hint: String) throws -> String {
        var properties: [(String, JSONSchemaValue)] = []
        switch schema["properties"] {
        case nil: break
        case .object(let members)?: properties = members
        default: throw invalid("'properties' must be an object of schemas", "properties", path)
        }
        var required: [String] = []
        var isRequired = Set<String>()  // the names in `required`, looked up once per name
        switch schema["required"] {
        case nil: break
        case .array(let names)?:
            for name in names {
                guard case .string(let text) = name else {
                    throw invalid("'required' must be an array of strings", "required", path)
                }
                if isRequired.insert(text).inserted { required.append(text) }
            }
        default: throw invalid("'required' must be an array of strings", "required", path)
        }
        let additional: Additional
        switch schema["additionalProperties"] {
        case nil, .bool(true)?: additional = .any
        case .bool(false)?: additional = .none
        case .object?: additional = .schema(schema["additionalProperties"]!)
        default: throw invalid("'additionalProperties' must be a boolean or a schema", "additionalProperties", path)
        }

        // Member rules, required ones first.
        let named = Set(properties.map(\.0))
        var requiredMembers: [String] = []
        var optionalMembers: [String] = []
        for (name, propertySchema) in properties {
            let member = try memberRule(name, propertySchema, path: "\(path)/properties/\(pointerEscaped(name))",
                                        hint: "\(hint)-\(name)")
            if isRequired.contains(name) { requiredMembers.append(member) } else { optionalMembers.append(member) }
        }
        for name in required where !named.contains(name) {
            let valueSchema: JSONSchemaValue
            switch additional {
            case .none:
                throw invalid("the required property '\(name)' is not in 'properties' and "
                              + "'additionalProperties' is false", "required", path)
            case .any: valueSchema = .bool(true)
            case .schema(let value): valueSchema = value
            }
            requiredMembers.append(try memberRule(name, valueSchema, path: "\(path)/additionalProperties",
                                                  hint: "\(hint)-\(name)"))
        }
        var additionalMember: String? = nil
        switch additional {
        case .none: break
        case .any, .schema:
            let value: String
            if case .schema(let valueSchema) = additional {
                value = try ruleName(valueSchema, path: "\(path)/additionalProperties", hint: "\(hint)-additional-value")
            } else {
                value = use("value")
            }
            let key = additionalKeyRule(excluding: Array(named) + required, hint: "\(hint)-additional-key")
            additionalMember = define("\(hint)-additional", "\(key) ws \":\" ws \(value)")
        }
        noteShared("ws")

        // "{" required (, optional)? ... (, additional)* "}"
        func rest(from index: Int) -> String {
            var parts = optionalMembers[index...].map { "( ws \",\" ws \($0) )?" }
            if let additionalMember { parts.append("( ws \",\" ws \(additionalMember) )*") }
            return parts.joined(separator: " ")
        }
        if !requiredMembers.isEmpty {
            let list = requiredMembers.joined(separator: " ws \",\" ws ")
            return define(hint, "\"{\" ws \(list) \(rest(from: 0)) ws \"}\"")
        }
        // No required member: the first member present may be any optional one.
        var first: String? = additionalMember.map { define("\(hint)-from-additional", "\($0) ( ws \",\" ws \($0) )*") }
        for index in optionalMembers.indices.reversed() {
            var body = "\(optionalMembers[index]) \(rest(from: index + 1))"
            if let first { body += " | \(first)" }
            first = define("\(hint)-from-\(index)", body)
        }
        guard let first else { return define(hint, "\"{\" ws \"}\"") }
        return define(hint, "\"{\" ws ( \(first) ws )? \"}\"")
    }

    /// A rule for one member `"name": value`.
    private mutating func memberRule(_ name: String, _ schema: JSONSchemaValue, path: String, hint: String) throws -> String {
        let value = try ruleName(schema, path: path, hint: hint)
        return define("\(hint)-member", "\(JSONGrammarRules.literal(JSONSchemaValue.quoted(name))) ws \":\" ws \(value)")
    }

    /// A rule for the keys of additional members: JSON strings without escapes that are
    /// none of `names`. The names go in a trie of characters; each trie node gets a rule
    /// that continues with one of its children, or with any other character followed by
    /// anything, or ends where no name ends.
    private mutating func additionalKeyRule(excluding names: [String], hint: String) -> String {
        let plain = names.filter { name in
            name.unicodeScalars.allSatisfy { $0 != "\"" && $0 != "\\" && $0.value >= 0x20 }
        }
        let keyCharacter = #"[^"\\\x00-\x1F]"#
        if plain.isEmpty {
            return define(hint, "\"\\\"\" \(keyCharacter)* \"\\\"\"")
        }
        // Trie of the names.
        var children: [[(Unicode.Scalar, Int)]] = [[]]
        var ends: [Bool] = [false]
        for name in plain {
            var node = 0
            for scalar in name.unicodeScalars {
                if let child = children[node].first(where: { $0.0 == scalar })?.1 {
                    node = child
                } else {
                    children.append([])
                    ends.append(false)
                    children[node].append((scalar, children.count - 1))
                    node = children.count - 1
                }
            }
            ends[node] = true
        }
        let characterRule = define("\(hint)-char", keyCharacter)
        let names = (0..<children.count).map { _ in reserve("\(hint)-node") }
        for node in children.indices {
            var alternatives = children[node].map { "\(JSONGrammarRules.literal(String($0.0))) \(names[$0.1])" }
            let others = [Unicode.Scalar("\""), "\\"] + children[node].map(\.0)
            alternatives.append("\(JSONGrammarRules.characterClass(others, negated: true).dropLast())\\x00-\\x1F] \(characterRule)*")
            if !ends[node] { alternatives.append("\"\"") }
            defineReserved(names[node], alternatives.joined(separator: " | "))
        }
        return define(hint, "\"\\\"\" \(names[0]) \"\\\"\"")
    }

    private func pointerEscaped(_ key: String) -> String {
        key.replacingAll("~", "~0").replacingAll("/", "~1")
    }
}
