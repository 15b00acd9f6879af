/// How request channels (`PREFIX:{ID}:tokens`) are published and subscribed.
///
/// `sharded` (SPUBLISH/SSUBSCRIBE) keeps a request's traffic on the cluster node
/// owning `{ID}`, so pub/sub grows with the shards; `classic` (PUBLISH/SUBSCRIBE)
/// is broadcast to every node of a cluster. Control channels (`PREFIX:cancel`)
/// are always classic: they are rare and must reach every worker.
public enum PubSub: String, Sendable, Hashable, Codable, CaseIterable {
    case classic
    case sharded

    /// The configured choice, or the default for the URL: sharded on a cluster, classic otherwise.
    public static func resolve(_ configured: PubSub?, for url: RedisURL?) -> PubSub {
        configured ?? (url?.isCluster == true ? .sharded : .classic)
    }

    public var publishCommand: String { self == .sharded ? "SPUBLISH" : "PUBLISH" }
    public var subscribeCommand: String { self == .sharded ? "SSUBSCRIBE" : "SUBSCRIBE" }
    /// The first element of a message pushed to a subscriber.
    public var messageKind: String { self == .sharded ? "smessage" : "message" }
}

extension FarmConfig {
    /// The protocol's key names for this farm, with its pub/sub choice resolved for its Redis URL.
    public var keys: Keys {
        Keys(prefix: prefix, pubsub: PubSub.resolve(pubsub, for: try? RedisURL(redis)))
    }
}
