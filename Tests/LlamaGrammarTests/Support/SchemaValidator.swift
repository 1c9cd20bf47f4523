import LlamaGrammar

// MARK: - A validator for the supported JSON Schema subset

/// Checks `value` against `schema` (resolving `$ref` in `root`); returns the first
/// violation, or nil if valid. Written from the JSON Schema rules, independently of the
/// grammar converter.
func schemaViolation(_ value: JSONSchemaValue, _ schema: JSONSchemaValue, root: JSONSchemaValue,
                     at path: String = "$") -> String? {
    if case .bool(let accepts) = schema { return accepts ? nil : "\(path): schema false" }
    guard case .object = schema else { return "\(path): schema is not an object" }
    if case .string(let reference)? = schema["$ref"] {
        var target = root
        for part in reference.dropFirst(2).split(separator: "/") { target = target[String(part)] ?? .null }
        return schemaViolation(value, target, root: root, at: path)
    }
    if case .array(let options)? = schema["anyOf"] {
        let passing = options.filter { schemaViolation(value, $0, root: root, at: path) == nil }.count
        return passing > 0 ? nil : "\(path): matches no anyOf alternative"
    }
    if case .array(let options)? = schema["oneOf"] {
        let passing = options.filter { schemaViolation(value, $0, root: root, at: path) == nil }.count
        return passing == 1 ? nil : "\(path): matches \(passing) oneOf alternatives"
    }
    if case .array(let options)? = schema["enum"], !options.contains(value) { return "\(path): not in enum" }
    if let constant = schema["const"], constant != value { return "\(path): not the const" }
    if let type = schema["type"] {
        let names: [String]
        switch type {
        case .string(let name): names = [name]
        case .array(let list): names = list.compactMap { if case .string(let n) = $0 { n } else { nil } }
        default: return "\(path): bad type keyword"
        }
        guard names.contains(where: { isOfType(value, $0) }) else { return "\(path): not of type \(names)" }
    }
    switch value {
    case .object(let members):
        var seen = Set<String>()
        for (key, _) in members {
            guard seen.insert(key).inserted else { return "\(path): duplicate key \(key)" }
        }
        var declared: [String: JSONSchemaValue] = [:]
        if case .object(let properties)? = schema["properties"] {
            for (name, sub) in properties { declared[name] = sub }
        }
        if case .array(let required)? = schema["required"] {
            for case .string(let name) in required where !seen.contains(name) {
                return "\(path): missing required \(name)"
            }
        }
        for (key, member) in members {
            if let sub = declared[key] {
                if let problem = schemaViolation(member, sub, root: root, at: "\(path).\(key)") { return problem }
            } else if let additional = schema["additionalProperties"] {
                if let problem = schemaViolation(member, additional, root: root, at: "\(path).\(key)") {
                    return problem
                }
            }
        }
    case .array(let items):
        if case .number(let minimum)? = schema["minItems"], Double(items.count) < minimum { return "\(path): too few items" }
        if case .number(let maximum)? = schema["maxItems"], Double(items.count) > maximum { return "\(path): too many items" }
        if let itemSchema = schema["items"] {
            for (index, item) in items.enumerated() {
                if let problem = schemaViolation(item, itemSchema, root: root, at: "\(path)[\(index)]") { return problem }
            }
        }
    case .string(let text):
        let length = Double(text.unicodeScalars.count)
        if case .number(let minimum)? = schema["minLength"], length < minimum { return "\(path): string too short" }
        if case .number(let maximum)? = schema["maxLength"], length > maximum { return "\(path): string too long" }
    default:
        break
    }
    return nil
}

private func isOfType(_ value: JSONSchemaValue, _ type: String) -> Bool {
    switch (value, type) {
    case (.null, "null"), (.bool, "boolean"), (.number, "number"), (.string, "string"),
         (.array, "array"), (.object, "object"): return true
    case (.number(let number), "integer"): return number == number.rounded()
    default: return false
    }
}
