import Foundation

/// Follows one request's events as a subscriber would: live from its
/// channel, or replayed from its log. Lines end with the terminal event.
///
/// The blocking reads run on a thread of their own.
public enum RequestWatcher {
    /// Subscribes to the request's channel before returning, so a job pushed
    /// afterwards loses no line; the stream ends after the terminal event or `timeout`.
    ///
    /// On a cluster it subscribes both ways (SSUBSCRIBE, then SUBSCRIBE on the same
    /// node, the one owning `{ID}`), so it follows a farm whatever its `pubsub` setting.
    public static func subscribe(url: RedisURL, keys: Keys, id: String, timeout: Double = 600) throws(LLMQError) -> AsyncStream<String> {
        let connection = try RedisConnection(url)
        let ways: [PubSub] = url.isCluster ? [.sharded, .classic] : [keys.pubsub]
        for way in ways {
            let reply = try connection.command([way.subscribeCommand, keys.tokens(id)])
            guard reply.array?.first?.string == way.subscribeCommand.lowercased() else {
                throw .redis("\(way.subscribeCommand) \(keys.tokens(id)) failed: \(reply)")
            }
        }
        nonisolated(unsafe) let c = connection  // handed to the reader thread, used only there
        return AsyncStream { out in
            let t = Thread {
                let end = Date().addingTimeInterval(timeout)
                reading: while Date() < end {
                    let reply: RedisReply
                    do {
                        guard let r = try c.waitReply(timeout: 0.5) else { continue }
                        reply = r
                    } catch {
                        break
                    }
                    guard let parts = reply.array, parts.count == 3, parts[0].string == "message" || parts[0].string == "smessage", let payload = parts[2].string else { continue }
                    for line in payload.split(separator: "\n") {
                        out.yield(String(line))
                        if isTerminal(line) { break reading }
                    }
                }
                out.finish()
            }
            t.start()
        }
    }

    /// Replays the request's log from the start and follows it until the terminal event.
    public static func tail(url: RedisURL, keys: Keys, id: String, follow: Bool = true, timeout: Double = 600) throws(LLMQError) -> AsyncStream<String> {
        nonisolated(unsafe) let c = try RedisConnection(url)  // handed to the reader thread, used only there
        let logKey = keys.log(id)
        return AsyncStream { out in
            let t = Thread {
                var last = "0-0"
                let end = Date().addingTimeInterval(timeout)
                reading: while Date() < end {
                    let args = follow ? ["XREAD", "COUNT", "1000", "BLOCK", "500", "STREAMS", logKey, last] : ["XREAD", "COUNT", "1000", "STREAMS", logKey, last]
                    guard let reply = try? c.command(args) else { break }
                    guard let streams = reply.array, let entries = streams.first?.array?.last?.array else {
                        if follow { continue } else { break }
                    }
                    for e in entries {
                        guard let parts = e.array, parts.count == 2, let id = parts[0].string, let fields = parts[1].array else { continue }
                        last = id
                        var i = 0
                        while i + 1 < fields.count {
                            if fields[i].string == "line", let line = fields[i + 1].string {
                                out.yield(line)
                                if isTerminal(Substring(line)) { break reading }
                            }
                            i += 2
                        }
                    }
                }
                out.finish()
            }
            t.start()
        }
    }

    /// Whether a line is a terminal event: an object whose own top-level `type` is
    /// `done` or `error`. A substring match would stop at a `start` event whose
    /// metadata happens to hold `"type":"done"`.
    public static func isTerminal(_ line: Substring) -> Bool {
        var line = line
        return line.withUTF8 { b in
            let s = JSONScanner(b)
            guard let top = s.validate(), s.isObject(top), let type = s.member(top, "type").flatMap(s.string) else { return false }
            return type == "done" || type == "error"
        }
    }
}
