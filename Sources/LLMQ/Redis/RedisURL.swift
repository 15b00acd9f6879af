import Foundation

/// Where and how to reach Redis: `redis://[[user]:password@]host[:port][/db]`
/// or `unix:///path/to/redis.sock`. The password may also come from
/// `LLMQ_REDIS_PASSWORD` (and the user from `LLMQ_REDIS_USERNAME`).
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var unixPath: String?
    public var username: String?
    public var password: String?
    public var database: Int
    /// Set for `redis+sentinel://`: every connection asks these sentinels where the master is now.
    public var sentinel: SentinelSet?
    /// Seed nodes of a Redis Cluster (`redis+cluster://`); nil for one server. See `RedisURL+Cluster.swift`.
    public var cluster: [HostPort]?

    public init(host: String = "127.0.0.1", port: Int = 6379, unixPath: String? = nil, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.unixPath = unixPath
        self.username = username
        self.password = password
        self.database = database
    }

    public init(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(LLMQError) {
        if text.hasPrefix("rediss://") {
            throw .configuration("""
                \(text): TLS to Redis is not available (Debian's hiredis 0.14 is built without TLS). \
                Run a TLS sidecar (stunnel, spiped or an envoy proxy) next to each worker and point llmq at its \
                plain redis:// address on loopback.
                """)
        }
        self.init()
        if text.hasPrefix(Self.clusterScheme) {
            try parseCluster(text)
        } else if text.hasPrefix("unix://") {
            unixPath = String(text.dropFirst("unix://".count))
        } else if text.hasPrefix(Self.sentinelScheme) {
            self = try RedisURL(sentinelURL: text, environment: environment)
        } else {
            guard text.hasPrefix("redis://"), let comps = URLComponents(string: text) else {
                throw .configuration("\(text) is not a Redis URL; write redis://[user:password@]host:port[/db]")
            }
            host = comps.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
            port = comps.port ?? 6379
            if let u = comps.user, !u.isEmpty { username = u.removingPercentEncoding ?? u }
            if let p = comps.password, !p.isEmpty { password = p.removingPercentEncoding ?? p }
            let path = comps.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else {
                    throw .configuration("\(text): the path must be a database number, such as /0")
                }
                database = db
            }
        }
        if password == nil, let p = environment["LLMQ_REDIS_PASSWORD"], !p.isEmpty { password = p }
        if username == nil, let u = environment["LLMQ_REDIS_USERNAME"], !u.isEmpty { username = u }
    }

    /// The URL without the password, for logs.
    public var description: String {
        if let unixPath { return "unix://\(unixPath)" }
        if let sentinel { return database == 0 ? sentinel.description : "\(sentinel)/\(database)" }
        if let cluster { return clusterDescription(cluster) }
        let auth = password == nil ? (username.map { "\($0)@" } ?? "") : "\(username ?? ""):***@"
        return "redis://\(auth)\(host):\(port)/\(database)"
    }
}
