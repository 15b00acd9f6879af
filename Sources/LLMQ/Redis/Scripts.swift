import Foundation

/// Lua scripts for the writes that must happen exactly once even when a
/// batch is sent again after a lost connection. Each touches keys of one hash
/// tag only, so it runs unchanged on Redis Cluster. In-flight lists are searched
/// from the tail (`LREM … -1`), where the oldest jobs sit (see `HeldJob.acknowledge`).
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
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
          redis.call('RPUSH', KEYS[2], ARGV[2])
          return 1
        end
        return 0
        """

    /// Moves a job from an in-flight list to the dead list, only if it is still there.
    /// KEYS: in-flight list, dead list. ARGV: job as held, dead-letter entry.
    public static let bury = """
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
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
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return -1 end
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

    // MARK: Fair scheduling (`schedule: fair`; README "Tenants and priorities")
    //
    // A family's queue stays the protocol's list; a fetch first sorts what producers pushed
    // into one list per priority and tenant (`BASE:ready:PRIORITY:TENANT`, left in, right out),
    // and keeps, per priority, the rotation of tenants with jobs waiting (`BASE:turns:PRIORITY`,
    // the head's turn). `running` counts each tenant's jobs held across the farm,
    // `running:WORKER` what one worker holds (so a reaper can give a lost worker's share back),
    // and `blocked` the tenants passed over at their limit: the release that frees one of them
    // pushes `wakeMarker` onto the queue, which wakes a fetcher blocked on it.

    /// Pushed onto a fair family's queue to wake fetchers; a fetch drops it. A NUL byte starts it,
    /// so no JSON job can equal it.
    public static let wakeMarker: [UInt8] = Array("\u{0}llmq:wake".utf8)

    /// How a job leaves a worker in a fair family (`fairLeave`'s ARGV[3]).
    public enum FairExit: String, Sendable {
        case ack, requeue, bury, delay
    }

    /// Sorts up to ARGV[3] queued jobs into their priority and tenant lists, then takes up to
    /// ARGV[2] jobs: high before normal before low; within a priority, the tenant whose turn it is
    /// gets up to its weight in a row, and a tenant at its limit is passed over. Taken jobs go to
    /// the in-flight list. Returns {job, tenant, job, tenant, …}. Each list operation moves a batch
    /// (RPOP with a count, LPUSH of many), so a call costs per tenant turn more than per job.
    /// A job whose JSON cannot be read, or whose `tenant` is not a string, is sorted under tenant ""
    /// and normal priority, so the worker's parser still answers it.
    /// KEYS: queue, in-flight, running, running by worker, blocked. ARGV: base, jobs wanted, sort budget,
    /// wake marker, default weight, default limit, then (tenant, weight, limit) per configured tenant.
    public static let fairTake = """
        local base = ARGV[1]
        local want = tonumber(ARGV[2])
        local dw, dl = tonumber(ARGV[5]), tonumber(ARGV[6])
        local W, L = {}, {}
        for i = 7, #ARGV, 3 do W[ARGV[i]] = tonumber(ARGV[i + 1]); L[ARGV[i]] = tonumber(ARGV[i + 2]) end
        local popped = redis.call('RPOP', KEYS[1], tonumber(ARGV[3]))
        if popped then
          local groups, order = {}, {}
          for _, raw in ipairs(popped) do
            if raw ~= ARGV[4] then
              local tenant, prio, again = '', 'normal', false
              local ok, j = pcall(cjson.decode, raw)
              if ok and type(j) == 'table' then
                if type(j.tenant) == 'string' then tenant = j.tenant end
                if j.priority == 'high' or j.priority == 'low' then prio = j.priority end
                again = type(j.attempts) == 'number' and j.attempts > 0
              end
              local list = base .. 'ready:' .. prio .. ':' .. tenant
              if again then
                -- A job put back after an attempt goes to the head of its tenant's line, as it did on the queue.
                if redis.call('RPUSH', list, raw) == 1 then redis.call('RPUSH', base .. 'turns:' .. prio, tenant) end
              else
                local g = groups[list]
                if not g then
                  g = {prio = prio, tenant = tenant, items = {}}
                  groups[list] = g
                  order[#order + 1] = list
                end
                g.items[#g.items + 1] = raw
              end
            end
          end
          for _, list in ipairs(order) do
            local g = groups[list]
            if redis.call('LPUSH', list, unpack(g.items)) == #g.items then redis.call('RPUSH', base .. 'turns:' .. g.prio, g.tenant) end
          end
        end
        local out = {}
        local got = 0
        for _, prio in ipairs({'high', 'normal', 'low'}) do
          local turns = base .. 'turns:' .. prio
          local served = base .. 'served:' .. prio
          while got < want do
            local took = false
            local tn = redis.call('LLEN', turns)
            for _ = 1, tn do
              local t = redis.call('LINDEX', turns, 0)
              if not t then break end
              local lim = L[t] or dl
              local list = base .. 'ready:' .. prio .. ':' .. t
              local room = want - got
              if lim > 0 then room = math.min(room, lim - (tonumber(redis.call('HGET', KEYS[3], t)) or 0)) end
              local len = redis.call('LLEN', list)
              if len == 0 then
                -- Only if the keys were changed by hand: drop the stale turn.
                redis.call('LPOP', turns)
                redis.call('HDEL', served, t)
              elseif room <= 0 then
                redis.call('HSET', KEYS[5], t, 1)
                redis.call('LMOVE', turns, turns, 'LEFT', 'RIGHT')
                redis.call('HDEL', served, t)
              else
                local w = W[t] or dw
                local s = tonumber(redis.call('HGET', served, t)) or 0
                -- A tenant alone at its priority keeps the turn: no one waits for it to end.
                if tn > 1 then room = math.max(1, math.min(room, w - s)) end
                local jobs = redis.call('RPOP', list, room)
                local n = #jobs
                redis.call('LPUSH', KEYS[2], unpack(jobs))
                redis.call('HINCRBY', KEYS[3], t, n)
                redis.call('HINCRBY', KEYS[4], t, n)
                for _, job in ipairs(jobs) do
                  out[#out + 1] = job
                  out[#out + 1] = t
                end
                got = got + n
                if len == n then
                  redis.call('LPOP', turns)
                  redis.call('HDEL', served, t)
                elseif tn > 1 and s + n >= w then
                  redis.call('LMOVE', turns, turns, 'LEFT', 'RIGHT')
                  redis.call('HDEL', served, t)
                elseif tn > 1 then
                  redis.call('HSET', served, t, s + n)
                end
                took = true
                break
              end
            end
            if not took then break end
          end
        end
        return out
        """

    /// Moves a job out of a fair family's in-flight list (ack, requeue, bury or delay, only if it is
    /// still there) and gives its tenant's share back; wakes a fetcher when the tenant had been passed
    /// over at its limit. Returns what the fifo script for the same exit returns (delay: ms until due or -1).
    /// KEYS: in-flight, destination (queue, dead list or delayed set), running, running by worker, blocked, queue.
    /// ARGV: job as held, tenant, exit, wake marker, then the exit's: requeue the job as put back; bury the entry;
    /// delay the job as it waits, delay ms, absolute due ms or "".
    public static let fairLeave = """
        local op = ARGV[3]
        if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
          if op == 'delay' then return -1 end
          return 0
        end
        local r = 1
        if op == 'requeue' then
          redis.call('RPUSH', KEYS[2], ARGV[5])
        elseif op == 'bury' then
          redis.call('LPUSH', KEYS[2], ARGV[5])
        elseif op == 'delay' then
          local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          local due = now + tonumber(ARGV[6])
          if ARGV[7] ~= '' and tonumber(ARGV[7]) > due then due = tonumber(ARGV[7]) end
          redis.call('ZADD', KEYS[2], string.format('%.0f', due), ARGV[5])
          r = due - now
        end
        for _, k in ipairs({KEYS[3], KEYS[4]}) do
          if redis.call('HINCRBY', k, ARGV[2], -1) <= 0 then redis.call('HDEL', k, ARGV[2]) end
        end
        if redis.call('HDEL', KEYS[5], ARGV[2]) == 1 then redis.call('RPUSH', KEYS[6], ARGV[4]) end
        return r
        """

    /// Gives back the tenant shares a lost worker held in a fair family (after its jobs were
    /// recovered with the fifo scripts), waking fetchers for tenants that were at their limit.
    /// Returns the jobs given back.
    /// KEYS: running, running by the lost worker, blocked, queue. ARGV: wake marker.
    public static let fairRepair = """
        local h = redis.call('HGETALL', KEYS[2])
        local n = 0
        for i = 1, #h, 2 do
          local c = tonumber(h[i + 1])
          n = n + c
          if redis.call('HINCRBY', KEYS[1], h[i], -c) <= 0 then redis.call('HDEL', KEYS[1], h[i]) end
          if redis.call('HDEL', KEYS[3], h[i]) == 1 then redis.call('RPUSH', KEYS[4], ARGV[1]) end
        end
        redis.call('DEL', KEYS[2])
        return n
        """

    /// A fair family's tenants, for `llmq stats` and the metrics: {tenant, waiting, running, …}.
    /// KEYS: running. ARGV: base.
    public static let fairCounts = """
        local w = {}
        for _, p in ipairs({'high', 'normal', 'low'}) do
          for _, t in ipairs(redis.call('LRANGE', ARGV[1] .. 'turns:' .. p, 0, -1)) do
            w[t] = (w[t] or 0) + redis.call('LLEN', ARGV[1] .. 'ready:' .. p .. ':' .. t)
          end
        end
        local r = redis.call('HGETALL', KEYS[1])
        local run = {}
        for i = 1, #r, 2 do
          run[r[i]] = tonumber(r[i + 1])
          w[r[i]] = w[r[i]] or 0
        end
        local out = {}
        for t, n in pairs(w) do
          out[#out + 1] = t
          out[#out + 1] = n
          out[#out + 1] = run[t] or 0
        end
        return out
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
