/// Lua scripts for the writes that must happen exactly once even when a
/// batch is sent again after a lost connection. Each touches keys of one hash
/// tag only, so it runs unchanged on Redis Cluster.
public enum Scripts {
    /// The terminal write of one run of a request: its last lines to the
    /// channel and the log, and the result. Skipped when the result already
    /// carries this run's token (a resend).
    /// KEYS: tokens, log, result. ARGV: payload, result TTL, log TTL, run token, result JSON, line…
    public static let terminal = """
        local cur = redis.call('GET', KEYS[3])
        if cur and string.find(cur, ARGV[4], 1, true) then return 0 end
        if ARGV[1] ~= '' then redis.call('PUBLISH', KEYS[1], ARGV[1]) end
        for i = 6, #ARGV do redis.call('XADD', KEYS[2], '*', 'line', ARGV[i]) end
        redis.call('EXPIRE', KEYS[2], ARGV[3])
        redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[2])
        return 1
        """

    /// Moves a job from an in-flight list back to the head of its queue,
    /// possibly rewritten, only if it is still there (so a resend cannot push it twice).
    /// KEYS: in-flight list, queue. ARGV: job as held, job as put back.
    public static let requeue = """
        if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
          redis.call('RPUSH', KEYS[2], ARGV[2])
          return 1
        end
        return 0
        """

    /// Moves a job from an in-flight list to the dead list, only if it is still there.
    /// KEYS: in-flight list, dead list. ARGV: job as held, dead-letter entry.
    public static let bury = """
        if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
          redis.call('LPUSH', KEYS[2], ARGV[2])
          return 1
        end
        return 0
        """

    public static func appendEval(_ script: String, keys: [String], args: [[UInt8]], to out: inout [UInt8]) {
        RESP.appendArrayHeader(3 + keys.count + args.count, to: &out)
        RESP.appendBulk("EVAL", to: &out)
        RESP.appendBulk(script, to: &out)
        RESP.appendBulk(String(keys.count), to: &out)
        for k in keys { RESP.appendBulk(k, to: &out) }
        for a in args { RESP.appendBulk(a, to: &out) }
    }
}
