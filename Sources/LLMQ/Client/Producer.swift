/// Pushes jobs the way any producer does: `LPUSH llmq:{MODE}:queue JOB`, or for a
/// sharded mode onto the queue of the job id's shard (`QueueFamily.shard(of:shards:)`).
public struct Producer {
    let connection: RedisConnection
    let keys: Keys
    /// Shards per mode; absent modes have one.
    public let shards: [Mode: Int]

    /// `shards` nil reads what the farm's workers announced (`PREFIX:shards`).
    public init(url: RedisURL, keys: Keys, shards: [Mode: Int]? = nil) throws(LLMQError) {
        connection = try RedisConnection(url)
        self.keys = keys
        if let shards {
            self.shards = shards
        } else {
            self.shards = try FarmInspector.announcedShards(connection, keys: keys)
        }
    }

    public func push(_ job: JSONValue, mode: Mode) throws(LLMQError) {
        try push(raw: job.jsonBytes, mode: mode)
    }

    public func push(raw: [UInt8], mode: Mode) throws(LLMQError) {
        let queue = QueueFamily.of(id: JobParser.peekID(raw) ?? "", mode: mode, shards: shards[mode] ?? 1, keys: keys).queue
        let r = try connection.command([Array("LPUSH".utf8), Array(queue.utf8), raw])
        if case .error(let e) = r { throw .redis("LPUSH \(queue) failed: \(e)") }
    }

    /// Asks for a request to be cancelled, queued or running.
    public func cancel(id: String, ttl: Int = 3600) throws(LLMQError) {
        try connection.command(["SET", keys.cancel(id), "1", "EX", String(ttl)])
        try connection.command(["PUBLISH", keys.cancelChannel, id])
    }
}
