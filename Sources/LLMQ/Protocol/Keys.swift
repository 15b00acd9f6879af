/// Redis key names of the wire protocol (PROTOCOL.md), under a configurable prefix.
///
/// Queue keys carry the hash tag `{MODE}` and request keys `{ID}`, so every
/// multi-key command touches one cluster slot.
public struct Keys: Sendable, Hashable {
    public let prefix: String
    /// How request channels are published: PUBLISH, or SPUBLISH on the node owning `{ID}` (cluster).
    public var pubsub: PubSub

    public init(prefix: String = "llmq", pubsub: PubSub = .classic) {
        self.prefix = prefix
        self.pubsub = pubsub
    }

    public func queue(_ mode: Mode) -> String { "\(prefix):{\(mode)}:queue" }
    public func inflight(_ mode: Mode, worker: String) -> String { "\(prefix):{\(mode)}:inflight:\(worker)" }
    public func inflightPattern(_ mode: Mode) -> String { "\(prefix):{\(mode)}:inflight:*" }
    public func dead(_ mode: Mode) -> String { "\(prefix):{\(mode)}:dead" }
    /// Jobs of a mode waiting for a time (retry backoff, cooldown, `not_before`), scored by due time in Unix ms.
    public func delayed(_ mode: Mode) -> String { "\(prefix):{\(mode)}:delayed" }
    public func tokens(_ id: String) -> String { "\(prefix):{\(id)}:tokens" }
    public func log(_ id: String) -> String { "\(prefix):{\(id)}:log" }
    public func result(_ id: String) -> String { "\(prefix):{\(id)}:result" }
    public func cancel(_ id: String) -> String { "\(prefix):{\(id)}:cancel" }
    public var cancelChannel: String { "\(prefix):cancel" }
    public var workers: String { "\(prefix):workers" }
    public func worker(_ id: String) -> String { "\(prefix):worker:\(id)" }
    public func control(_ worker: String) -> String { "\(prefix):control:\(worker)" }
    public func cooldown(_ provider: String) -> String { "\(prefix):cooldown:\(provider)" }
    /// Shards per sharded mode (hash mode → K), written by workers at start for producers and tools without the configuration.
    public var shards: String { "\(prefix):shards" }
    /// The key family of `mode`, or of its shard `shard` (README "Shards").
    public func family(_ mode: Mode, shard: Int? = nil) -> QueueFamily { QueueFamily(mode: mode, shard: shard, keys: self) }
}
