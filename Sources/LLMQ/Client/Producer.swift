/// Pushes jobs the way any producer does: `LPUSH llmq:{MODE}:queue JOB`.
public struct Producer {
    let connection: RedisConnection
    let keys: Keys

    public init(url: RedisURL, keys: Keys) throws(LLMQError) {
        connection = try RedisConnection(url)
        self.keys = keys
    }

    public func push(_ job: JSONValue, mode: Mode) throws(LLMQError) {
        try push(raw: job.jsonBytes, mode: mode)
    }

    public func push(raw: [UInt8], mode: Mode) throws(LLMQError) {
        let r = try connection.command([Array("LPUSH".utf8), Array(keys.queue(mode).utf8), raw])
        if case .error(let e) = r { throw .redis("LPUSH \(keys.queue(mode)) failed: \(e)") }
    }

    /// Asks for a request to be cancelled, queued or running.
    public func cancel(id: String, ttl: Int = 3600) throws(LLMQError) {
        try connection.command(["SET", keys.cancel(id), "1", "EX", String(ttl)])
        try connection.command(["PUBLISH", keys.cancelChannel, id])
    }
}
