/// One mode's key family: the queue, in-flight lists, delayed set, dead list
/// and scheduling keys that share one hash tag, so every script over them
/// touches one cluster slot.
///
/// A mode with `shards: 1` (the default) has one family tagged `{MODE}`, the
/// protocol's keys exactly. A mode with `shards: K > 1` has K families tagged
/// `{MODE~0}` … `{MODE~K-1}`; a job's `mode` field stays `MODE` and producers
/// choose the family with `shard(of:shards:)`.
public struct QueueFamily: Sendable, Hashable, CustomStringConvertible {
    public let mode: Mode
    /// nil for an unsharded mode (tag `{MODE}`).
    public let shard: Int?
    public let keys: Keys

    public init(mode: Mode, shard: Int?, keys: Keys) {
        self.mode = mode
        self.shard = shard
        self.keys = keys
    }

    /// Every family of a mode spread over `shards` tags.
    public static func all(_ mode: Mode, shards: Int, keys: Keys) -> [QueueFamily] {
        shards <= 1 ? [QueueFamily(mode: mode, shard: nil, keys: keys)] : (0..<shards).map { QueueFamily(mode: mode, shard: $0, keys: keys) }
    }

    /// The family a producer pushes job `id` to.
    public static func of(id: String, mode: Mode, shards: Int, keys: Keys) -> QueueFamily {
        QueueFamily(mode: mode, shard: shards <= 1 ? nil : shard(of: id, shards: shards), keys: keys)
    }

    /// The shard of a job id: the first 8 hex digits of SHA-1(id) as a number, modulo `shards`.
    /// Any language computes it; redis-cli does with `EVAL "return tonumber(string.sub(redis.sha1hex(ARGV[1]),1,8),16) % ARGV[2]" 0 ID K`.
    public static func shard(of id: String, shards: Int) -> Int {
        guard shards > 1 else { return 0 }
        let d = SHA1.digest(Array(id.utf8))
        let n = UInt32(d[0]) << 24 | UInt32(d[1]) << 16 | UInt32(d[2]) << 8 | UInt32(d[3])
        return Int(n % UInt32(shards))
    }

    /// `{MODE}` or `{MODE~i}`.
    public var tag: String { shard.map { "{\(mode)~\($0)}" } ?? "{\(mode)}" }
    /// The start every key of the family shares, `PREFIX:{TAG}:`; scripts build their own keys from it.
    public var base: String { "\(keys.prefix):\(tag):" }
    public var queue: String { base + "queue" }
    public func inflight(worker: String) -> String { base + "inflight:" + worker }
    public var inflightPattern: String { base + "inflight:*" }
    public var dead: String { base + "dead" }
    public var delayed: String { base + "delayed" }
    /// Fair scheduling: jobs running per tenant across the farm (hash tenant → count).
    public var running: String { base + "running" }
    /// Fair scheduling: what one worker holds per tenant, so a reaper can give a lost worker's share back.
    public func runningBy(worker: String) -> String { base + "running:" + worker }
    /// Fair scheduling: tenants passed over at their limit with jobs waiting (a release wakes a fetcher).
    public var blocked: String { base + "blocked" }

    public var description: String { shard.map { "\(mode)~\($0)" } ?? mode.rawValue }
}
