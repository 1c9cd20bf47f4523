import Yams

// MARK: - Field access with error paths

struct Fields {
    let mapping: Node.Mapping
    let path: String
    var seen = Set<String>()

    init(_ mapping: Node.Mapping, path: String) {
        self.mapping = mapping
        self.path = path
    }

    mutating func node(_ key: String) -> Node? {
        seen.insert(key)
        return mapping[Node(key)]
    }

    mutating func optionalScalarText(_ key: String) throws -> String? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string else { throw ManifestError(field: path + key, reason: "expected a single value") }
        return s
    }

    mutating func string(_ key: String) throws -> String {
        guard let s = try optionalString(key) else { throw ManifestError(field: path + key, reason: "is required") }
        return s
    }

    mutating func optionalString(_ key: String) throws -> String? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, !s.isEmpty else { throw ManifestError(field: path + key, reason: "expected a non-empty string") }
        return s
    }

    /// An "f16" or "f32" choice (any case).
    mutating func optionalPrecision<T: RawRepresentable>(_ key: String, _ type: T.Type) throws -> T? where T.RawValue == String {
        guard let s = try optionalString(key) else { return nil }
        guard let v = T(rawValue: s.lowercased()) else { throw ManifestError(field: path + key, reason: "\(s.debugDescription) is not f16 or f32") }
        return v
    }

    mutating func optionalBool(_ key: String) throws -> Bool? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, let v = Bool(s.lowercased()) ?? (s == "yes" ? true : s == "no" ? false : nil) else {
            throw ManifestError(field: path + key, reason: "\(n.scalar?.string.debugDescription ?? "this") is not true or false")
        }
        return v
    }

    mutating func optionalInt(_ key: String, range: ClosedRange<Int>) throws -> Int? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, let v = Int(s) else {
            throw ManifestError(field: path + key, reason: "\(n.scalar?.string.debugDescription ?? "this") is not an integer")
        }
        guard range.contains(v) else { throw ManifestError(field: path + key, reason: "\(v) is outside \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    mutating func optionalDouble(_ key: String, range: ClosedRange<Double>) throws -> Double? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string, let v = Double(s), v.isFinite else {
            throw ManifestError(field: path + key, reason: "\(n.scalar?.string.debugDescription ?? "this") is not a number")
        }
        guard range.contains(v) else { throw ManifestError(field: path + key, reason: "\(v) is outside \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    mutating func optionalMapping(_ key: String) throws -> Node.Mapping? {
        guard let n = node(key) else { return nil }
        guard let m = n.mapping else { throw ManifestError(field: path + key, reason: "expected a mapping") }
        return m
    }

    mutating func sequence(_ key: String) throws -> Node.Sequence? {
        guard let n = node(key) else { throw ManifestError(field: path + key, reason: "is required") }
        guard let s = n.sequence else { throw ManifestError(field: path + key, reason: "expected a list") }
        return s
    }

    func rejectUnknown() throws {
        for (k, _) in mapping {
            let key = k.scalar?.string ?? "\(k)"
            if !seen.contains(key) { throw ManifestError(field: path + key, reason: "unknown field") }
        }
    }
}
