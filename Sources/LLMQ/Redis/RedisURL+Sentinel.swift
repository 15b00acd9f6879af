import Foundation

/// The sentinels that watch one master, from
/// `redis+sentinel://[[user]:password@]HOST:PORT,HOST:PORT/MASTER_NAME[/db]`.
/// The user and password are the master's (as in `redis://`); sentinels that
/// require a password of their own take it from `LLMQ_SENTINEL_PASSWORD`.
public struct SentinelSet: Sendable, Hashable, CustomStringConvertible {
    public struct Address: Sendable, Hashable {
        public var host: String
        public var port: Int
    }

    public var sentinels: [Address]
    public var masterName: String
    public var password: String?

    public var description: String {
        "redis+sentinel://\(sentinels.map { "\($0.host):\($0.port)" }.joined(separator: ","))/\(masterName)"
    }
}

extension RedisURL {
    static let sentinelScheme = "redis+sentinel://"

    /// Parses a `redis+sentinel://` URL; `host` and `port` stay at the defaults until a
    /// connection asks the sentinels where the master is (`SentinelResolver`).
    init(sentinelURL text: String, environment: [String: String]) throws(LLMQError) {
        self.init()
        let usage = "write redis+sentinel://[user:password@]HOST:PORT,HOST:PORT/MASTER_NAME[/db]"
        var rest = Substring(text.dropFirst(Self.sentinelScheme.count))
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = auth.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let user = parts.first.map { String($0).removingPercentEncoding ?? String($0) } ?? ""
            if !user.isEmpty { username = user }
            if parts.count == 2, !parts[1].isEmpty { password = String(parts[1]).removingPercentEncoding ?? String(parts[1]) }
        }
        let pieces = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard pieces.count >= 2, !pieces[1].isEmpty else { throw .configuration("\(text): the master's name is missing; \(usage)") }
        var addresses: [SentinelSet.Address] = []
        for item in pieces[0].split(separator: ",") {
            let hp = item.split(separator: ":")
            guard hp.count <= 2, let host = hp.first, !host.isEmpty else {
                throw .configuration("\(text): \"\(item)\" is not HOST:PORT; \(usage)")
            }
            let port = hp.count == 2 ? Int(hp[1]) : 26379
            guard let port, (1...65535).contains(port) else { throw .configuration("\(text): \"\(item)\" has no valid port; \(usage)") }
            addresses.append(.init(host: String(host), port: port))
        }
        guard !addresses.isEmpty else { throw .configuration("\(text): no sentinel address; \(usage)") }
        if pieces.count >= 3, !pieces[2].isEmpty {
            guard pieces.count == 3, let db = Int(pieces[2]), db >= 0 else {
                throw .configuration("\(text): after the master's name only a database number may follow, such as /0")
            }
            database = db
        }
        let sentinelPassword = environment["LLMQ_SENTINEL_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        sentinel = SentinelSet(sentinels: addresses, masterName: String(pieces[1]), password: sentinelPassword)
    }

    /// The plain `redis://` address of a data node, with this URL's credentials and database.
    func node(host: String, port: Int) -> RedisURL {
        RedisURL(host: host, port: port, username: username, password: password, database: database)
    }
}
