import Foundation

extension RedisURL {
    /// One node's address.
    public struct HostPort: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    static let clusterScheme = "redis+cluster://"

    /// Parses `redis+cluster://[[user]:password@]HOST:PORT,HOST:PORT,...`: the seed nodes
    /// llmq asks for the slot map. Any reachable node of the cluster will do; list several so
    /// a start-up does not depend on one of them being up.
    mutating func parseCluster(_ text: String) throws(LLMQError) {
        var rest = Substring(text.dropFirst(Self.clusterScheme.count))
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            guard path.isEmpty || path == "0" else {
                throw .configuration("\(text): a Redis Cluster has database 0 only; drop the /\(path)")
            }
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = auth.firstIndex(of: ":") {
                let u = String(auth[..<colon]), p = String(auth[auth.index(after: colon)...])
                if !u.isEmpty { username = u.removingPercentEncoding ?? u }
                if !p.isEmpty { password = p.removingPercentEncoding ?? p }
            } else if !auth.isEmpty {
                let u = String(auth)
                username = u.removingPercentEncoding ?? u
            }
        }
        var seeds: [HostPort] = []
        for part in rest.split(separator: ",", omittingEmptySubsequences: true) {
            let item = part.trimmingCharacters(in: .whitespaces)
            var host = item
            var port = 6379
            if item.hasPrefix("["), let close = item.firstIndex(of: "]") {
                host = String(item[item.index(after: item.startIndex)..<close])
                let after = item[item.index(after: close)...]
                if after.hasPrefix(":") {
                    guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                        throw .configuration("\(text): \(item) has no valid port; write HOST:PORT")
                    }
                    port = p
                }
            } else if let colon = item.lastIndex(of: ":") {
                host = String(item[..<colon])
                guard let p = Int(item[item.index(after: colon)...]), (1...65535).contains(p) else {
                    throw .configuration("\(text): \(item) has no valid port; write HOST:PORT")
                }
                port = p
            }
            guard !host.isEmpty else { throw .configuration("\(text): \(item) names no host; write HOST:PORT") }
            seeds.append(HostPort(host: host, port: port))
        }
        guard !seeds.isEmpty else {
            throw .configuration("\(text) names no node; write redis+cluster://HOST:PORT,HOST:PORT (any nodes of the cluster)")
        }
        cluster = seeds
        host = seeds[0].host
        port = seeds[0].port
        database = 0
    }

    func clusterDescription(_ seeds: [HostPort]) -> String {
        let auth = password == nil ? (username.map { "\($0)@" } ?? "") : "\(username ?? ""):***@"
        return "\(Self.clusterScheme)\(auth)\(seeds.map(\.description).joined(separator: ","))"
    }

    /// The URL of one node of this URL's cluster: same credentials, no cluster.
    public func node(_ address: HostPort) -> RedisURL {
        RedisURL(host: address.host, port: address.port, username: username, password: password, database: 0)
    }

    /// Whether this URL names a Redis Cluster.
    public var isCluster: Bool { cluster != nil }
}
