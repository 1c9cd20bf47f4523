import Foundation

// MARK: - URLs

/// An `http://` or `https://host[:port][/base]` address.
struct EndpointURL: Equatable, Sendable {
    var isHTTPS: Bool
    var host: String
    var port: Int
    /// Path and query, starting with "/".
    var path: String

    /// Parses `text`; a missing scheme means `http://`.
    init(_ text: String) throws {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        isHTTPS = false
        if let schemeEnd = rest.range(of: "://") {
            switch rest[..<schemeEnd.lowerBound].lowercased() {
            case "http": isHTTPS = false
            case "https": isHTTPS = true
            default: throw LlamaClientError.invalidURL("'\(text)': only http:// and https:// are supported")
            }
            rest = rest[schemeEnd.upperBound...]
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var pathPart = rest[authorityEnd...]
        if let fragment = pathPart.firstIndex(of: "#") { pathPart = pathPart[..<fragment] }
        path = pathPart.isEmpty ? "/" : (pathPart.hasPrefix("/") ? String(pathPart) : "/" + pathPart)
        guard !path.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7F } == true }) else {
            throw LlamaClientError.invalidURL("'\(text)': the path holds a space or control character")
        }

        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw LlamaClientError.invalidURL("'\(text)': unterminated IPv6 address")
            }
            host = String(authority[authority.index(after: authority.startIndex) ..< close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw LlamaClientError.invalidURL("'\(text)': bad port") }
                portText = after.dropFirst()
            }
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw LlamaClientError.invalidURL("'\(text)': bad IPv6 address")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty, !host.contains(where: { "@[]/\\ ".contains($0) }) else {
            throw LlamaClientError.invalidURL("'\(text)': no host")
        }
        if let portText {
            guard let value = Int(portText), (1 ... 65535).contains(value) else {
                throw LlamaClientError.invalidURL("'\(text)': bad port '\(portText)'")
            }
            port = value
        } else {
            port = isHTTPS ? 443 : 80
        }
    }

    /// This address with `route` appended to its path.
    func appending(_ route: String) -> EndpointURL {
        var copy = self
        let base = path.hasSuffix("/") ? String(path.dropLast()) : path
        copy.path = base + route
        return copy
    }

    /// `host:port` as a person reads it (brackets around an IPv6 address).
    var peer: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The whole URL, as AsyncHTTPClient takes it.
    var absoluteString: String {
        "\(isHTTPS ? "https" : "http")://\(peer)\(path)"
    }
}
