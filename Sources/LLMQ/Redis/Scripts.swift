import Foundation

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

    /// `terminal` for sharded pub/sub: the channel shares the result's slot, so SPUBLISH
    /// from the script stays on that node.
    public static let terminalSharded = terminal.replacingOccurrences(of: "'PUBLISH'", with: "'SPUBLISH'")

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

    /// Moves a job from an in-flight list into its mode's delayed set, only if it is still there.
    /// The due time is Redis' own clock plus a delay, or an absolute time if later, so
    /// workers on hosts with skewed clocks agree. Returns ms until due, or -1 when the job was gone.
    /// KEYS: in-flight list, delayed set. ARGV: job as held, job as it will wait, delay ms, absolute due ms or "".
    public static let delay = """
        if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return -1 end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local due = now + tonumber(ARGV[3])
        if ARGV[4] ~= '' and tonumber(ARGV[4]) > due then due = tonumber(ARGV[4]) end
        redis.call('ZADD', KEYS[2], string.format('%.0f', due), ARGV[2])
        return due - now
        """

    /// Moves up to ARGV[1] due jobs from a delayed set to the head of their queue,
    /// earliest first. Returns {moved, ms until the next one is due or -1 when none waits}.
    /// KEYS: delayed set, queue. ARGV: batch size.
    public static let promote = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, tonumber(ARGV[1]))
        for i = #due, 1, -1 do
          if redis.call('ZREM', KEYS[1], due[i]) == 1 then redis.call('RPUSH', KEYS[2], due[i]) end
        end
        local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        local wait = -1
        if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
        return {#due, wait}
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
