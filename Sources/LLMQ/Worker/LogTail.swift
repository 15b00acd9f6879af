/// The last line of a request's log: how the reaper and a reconnecting fetcher tell that a job
/// they find in an in-flight list has already ended (its terminal event is the log's last line).
enum LogTail {
    static func command(_ keys: Keys, id: String) -> [String] { ["XREVRANGE", keys.log(id), "+", "-", "COUNT", "1"] }

    /// The line in the reply to `command`, parsed; nil for an empty log or one Redis would not read.
    static func line(_ reply: RedisReply) -> JSONValue? {
        guard let fields = reply.array?.first?.array?.last?.array, fields.count >= 2, let bytes = fields[1].bytes else { return nil }
        return try? JSONValue.parse(bytes)
    }

    static func isTerminal(_ line: JSONValue?) -> Bool {
        let type = line?["type"]?.stringValue
        return type == "done" || type == "error"
    }
}
