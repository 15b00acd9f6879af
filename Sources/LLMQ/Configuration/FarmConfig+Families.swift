/// The key families the configuration's modes spread over (README "Shards").
extension FarmConfig {
    /// Every family of `mode`: one for an unsharded or unknown mode, else one per shard.
    public func families(_ mode: Mode) -> [QueueFamily] {
        QueueFamily.all(mode, shards: modes[mode]?.shards ?? 1, keys: Keys(prefix: prefix))
    }

    /// Every family of every configured mode, in mode order.
    public var allFamilies: [QueueFamily] { modes.keys.sorted().flatMap(families) }

    /// The family a producer pushes job `id` of `mode` to.
    public func family(forJob id: String, mode: Mode) -> QueueFamily {
        QueueFamily.of(id: id, mode: mode, shards: modes[mode]?.shards ?? 1, keys: Keys(prefix: prefix))
    }

    /// Shards per mode, for clients that hold no whole configuration.
    public var shards: [Mode: Int] { modes.mapValues(\.shards) }
}
