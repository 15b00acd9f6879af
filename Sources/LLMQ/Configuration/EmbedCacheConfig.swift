/// `embed_cache:` of a provider or a route: embed jobs answered from vectors the farm
/// already fetched, kept in Redis (see `EmbeddingCache`).
public struct EmbedCacheConfig: Sendable, Codable, Equatable {
    /// How long a vector is kept after it was fetched.
    public var ttlS: Int = 86400
    /// The farm-wide byte budget of this cache: vector bytes written within the last `ttl_s`
    /// (so still alive) across every worker. Once spent, new vectors are not stored until
    /// older ones expire; lookups go on.
    public var maxBytes: Int = 256 << 20

    public init(ttlS: Int = 86400, maxBytes: Int = 256 << 20) {
        self.ttlS = ttlS
        self.maxBytes = maxBytes
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case ttlS = "ttl_s"
        case maxBytes = "max_bytes"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ttlS = try c.decodeIfPresent(Int.self, forKey: .ttlS) ?? 86400
        maxBytes = try c.decodeIfPresent(Int.self, forKey: .maxBytes) ?? 256 << 20
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !CodingKeys.allCases.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\" (embed_cache takes ttl_s and max_bytes)"))
        }
    }

    static let ttlRange = 1...31_536_000
    static let maxBytesRange = 1024...(1 << 40)

    /// Checks one `embed_cache` block; `key` names it in the message (`routes.embed.embed_cache`).
    static func validate(_ c: EmbedCacheConfig, key: String, source: String) throws(LLMQError) {
        guard ttlRange.contains(c.ttlS) else {
            throw .configuration("\(source): \(key).ttl_s must be a whole number of seconds from 1 to a year (31536000), got \(c.ttlS)")
        }
        guard maxBytesRange.contains(c.maxBytes) else {
            throw .configuration("\(source): \(key).max_bytes must be from 1024 to 2^40 bytes, got \(c.maxBytes)")
        }
    }
}

/// A route as written in the configuration: its targets as a list, or
/// `{targets: [...], embed_cache: {...}}` when it carries options of its own.
struct RouteSpec: Decodable {
    var targets: [String]
    var embedCache: EmbedCacheConfig?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case targets
        case embedCache = "embed_cache"
    }

    init(from decoder: Decoder) throws {
        if let list = try? decoder.singleValueContainer().decode([String].self) {
            targets = list
            return
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        targets = try c.decode([String].self, forKey: .targets)
        embedCache = try c.decodeIfPresent(EmbedCacheConfig.self, forKey: .embedCache)
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !CodingKeys.allCases.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\" (a route is a list of targets or {targets, embed_cache})"))
        }
    }
}

extension FarmConfig {
    /// Validates every `embed_cache` block of the providers and routes.
    static func validateEmbedCaches(_ c: FarmConfig, source: String) throws(LLMQError) {
        for (name, p) in c.providers.sorted(by: { $0.key < $1.key }) {
            if let e = p.embedCache { try EmbedCacheConfig.validate(e, key: "providers.\(name).embed_cache", source: source) }
        }
        for (name, e) in c.routeEmbedCaches.sorted(by: { $0.key < $1.key }) {
            try EmbedCacheConfig.validate(e, key: "routes.\(name).embed_cache", source: source)
        }
    }
}
