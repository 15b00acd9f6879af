import Foundation

/// What an operator asks of a farm through Redis alone: queue depths, live
/// workers and their load, jobs in flight, the dead-letter lists; and the few
/// things an operator does: retry or purge dead jobs, ask a worker to drain.
/// Works from any machine that reaches the farm's Redis (`llmq stats`, `llmq dead`, `llmq drain`).
///
/// Thread rules: one thread at a time (it owns one connection).
public final class FarmInspector {
    let connection: RedisConnection
    public let keys: Keys
    /// Shards per mode as the farm's workers announced them (`PREFIX:shards`); absent modes have 1.
    public var shards: [Mode: Int] = [:]

    public init(url: RedisURL, keys: Keys) throws(LLMQError) {
        connection = try RedisConnection(url)
        connection.setTimeout(10)
        self.keys = keys
        shards = try Self.announcedShards(connection, keys: keys)
    }

    /// The `PREFIX:shards` hash (mode → K) workers write at start, for clients that hold no configuration.
    public static func announcedShards(_ c: RedisConnection, keys: Keys) throws(LLMQError) -> [Mode: Int] {
        let h = try c.command(["HGETALL", keys.shards]).array ?? []
        var out: [Mode: Int] = [:]
        for i in stride(from: 0, to: h.count - 1, by: 2) {
            if let m = h[i].string, let k = h[i + 1].integer, k > 1 { out[Mode(m)] = k }
        }
        return out
    }

    func families(_ mode: Mode) -> [QueueFamily] { QueueFamily.all(mode, shards: shards[mode] ?? 1, keys: keys) }

    public struct ModeStatus: Sendable, Equatable {
        public var mode: Mode
        public var pending: Int
        public var inflight: Int
        public var dead: Int
        /// Jobs in the delayed set (waiting for a retry backoff, a cooldown or `not_before`).
        public var delayed: Int = 0
        /// Of those, the ones whose time has come: workers move them back to the queue.
        public var delayedDue: Int = 0
        /// Seconds until the next delayed job is due (0 or less: one is due now); nil when none waits.
        public var nextDueIn: Double?
        /// Key families the mode spreads over (`shards`); every count above sums them.
        public var shards: Int = 1
        /// A fair mode's tenants with jobs waiting or running, summed over shards.
        public var tenants: [TenantStatus] = []
    }

    public struct TenantStatus: Sendable, Equatable {
        public var tenant: String
        /// Sorted jobs waiting for the tenant's turn (part of the mode's pending count).
        public var waiting: Int
        public var running: Int
    }

    public struct WorkerStatus: Sendable {
        public var id: String
        public var host: String
        public var pid: Int?
        public var state: String
        /// Seconds since its last heartbeat; nil when its hash expired (lost, not yet reaped).
        public var heartbeatAge: Double?
        public var uptime: Double?
        public var modes: [Mode]
        /// Jobs it holds per mode (its in-flight lists).
        public var inflight: [Mode: Int]
        /// Permits per mode, when the worker publishes them (`capacity_MODE`).
        public var capacity: [Mode: Int]
    }

    public struct InflightJob: Sendable {
        public var mode: Mode
        public var worker: String
        public var id: String
        public var model: String
        public var attempts: Int
    }

    public struct Snapshot: Sendable {
        public var at: Double
        public var modes: [ModeStatus]
        public var workers: [WorkerStatus]
        /// Up to the requested number of jobs in flight, oldest holders first.
        public var inflightJobs: [InflightJob]
        public var inflightTotal: Int
        public var deadTotal: Int { modes.reduce(0) { $0 + $1.dead } }
        public var delayedTotal: Int { modes.reduce(0) { $0 + $1.delayed } }
    }

    /// Modes worth looking at: the ones given, the protocol's three, those live
    /// workers serve, and those with a queue, delayed set or dead list in Redis.
    public func modes(including given: [Mode] = []) throws(LLMQError) -> [Mode] {
        var found = Set(given + [.chat, .complete, .embed])
        for w in try workerIDs() {
            if let m = try connection.command(["HGET", keys.worker(w), "modes"]).string {
                for mode in m.split(separator: ",") { found.insert(Mode(String(mode))) }
            }
        }
        // Bounded: a Redis holding millions of request keys is not walked in full. SCAN sees one node: visit every master.
        for node in try connection.masters() {
            var cursor = "0"
            for _ in 0..<50 {
                let r = try node.command(["SCAN", cursor, "MATCH", "\(keys.prefix):{*}:[qd][ue][eal]*", "COUNT", "2000"])
                guard let parts = r.array, parts.count == 2 else { break }
                for k in parts[1].array ?? [] {
                    guard let key = k.string else { continue }
                    for suffix in ["}:queue", "}:dead", "}:delayed"] where key.hasSuffix(suffix) {
                        var inner = key.dropFirst(keys.prefix.count + 2).dropLast(suffix.count)
                        // A shard's tag is `{MODE~i}`.
                        if let tilde = inner.lastIndex(of: "~"), Int(inner[inner.index(after: tilde)...]) != nil { inner = inner[..<tilde] }
                        if Job.isValidID(String(inner)) { found.insert(Mode(String(inner))) }
                    }
                }
                cursor = parts[0].string ?? "0"
                if cursor == "0" { break }
            }
        }
        return found.sorted()
    }

    public func workerIDs() throws(LLMQError) -> [String] {
        (try connection.command(["ZRANGE", keys.workers, "0", "-1"]).array ?? []).compactMap(\.string)
    }

    public func snapshot(modes: [Mode], jobLimit: Int = 20) throws(LLMQError) -> Snapshot {
        let now = Clock.unixTime()
        let ids = try workerIDs()
        var workers: [WorkerStatus] = []
        for id in ids {
            let h = try connection.command(["HGETALL", keys.worker(id)]).array ?? []
            var f: [String: String] = [:]
            for i in stride(from: 0, to: h.count - 1, by: 2) { f[h[i].string ?? ""] = h[i + 1].string ?? "" }
            var capacity: [Mode: Int] = [:]
            for (k, v) in f where k.hasPrefix("capacity_") { capacity[Mode(String(k.dropFirst(9)))] = Int(v) }
            let beat = f["heartbeat"].flatMap(Double.init)
            workers.append(WorkerStatus(
                id: id, host: f["host"] ?? "?", pid: f["pid"].flatMap { Int($0) }, state: f.isEmpty ? "lost" : (f["state"] ?? "?"),
                heartbeatAge: beat.map { max(0, now - $0) }, uptime: f["started"].flatMap(Double.init).map { now - $0 },
                modes: (f["modes"] ?? "").split(separator: ",").map { Mode(String($0)) }, inflight: [:], capacity: capacity))
        }
        var statuses: [ModeStatus] = []
        var jobs: [InflightJob] = []
        var inflightTotal = 0
        for mode in modes {
            var status = ModeStatus(mode: mode, pending: 0, inflight: 0, dead: 0)
            let families = families(mode)
            status.shards = families.count
            var tenants: [String: TenantStatus] = [:]
            for family in families {
                status.pending += try connection.command(["LLEN", family.queue]).integer ?? 0
                status.dead += try connection.command(["LLEN", family.dead]).integer ?? 0
                let delayed = try connection.command(["ZCARD", family.delayed]).integer ?? 0
                status.delayed += delayed
                if delayed > 0 {
                    status.delayedDue += try connection.command(["ZCOUNT", family.delayed, "-inf", String(Int64(now * 1000))]).integer ?? 0
                    let first = try connection.command(["ZRANGE", family.delayed, "0", "0", "WITHSCORES"]).array ?? []
                    if first.count == 2, let ms = first[1].string.flatMap(Double.init) {
                        status.nextDueIn = min(status.nextDueIn ?? .infinity, ms / 1000 - now)
                    }
                }
                for t in try Self.tenantCounts(family, connection) {
                    tenants[t.tenant, default: TenantStatus(tenant: t.tenant, waiting: 0, running: 0)].waiting += t.waiting
                    tenants[t.tenant]!.running += t.running
                    status.pending += t.waiting
                }
                for i in workers.indices {
                    let key = family.inflight(worker: workers[i].id)
                    let n = try connection.command(["LLEN", key]).integer ?? 0
                    guard n > 0 else { continue }
                    workers[i].inflight[mode, default: 0] += n
                    status.inflight += n
                    if jobs.count < jobLimit {
                        for raw in try connection.command(["LRANGE", key, "0", String(jobLimit - jobs.count - 1)]).array ?? [] {
                            let o = raw.bytes.flatMap { try? JSONValue.parse($0) }
                            jobs.append(InflightJob(
                                mode: mode, worker: workers[i].id, id: o?["id"]?.stringValue ?? "?", model: o?["model"]?.stringValue ?? "?",
                                attempts: o?["attempts"]?.intValue ?? 0))
                        }
                    }
                }
            }
            status.tenants = tenants.values.sorted { $0.tenant < $1.tenant }
            inflightTotal += status.inflight
            statuses.append(status)
        }
        return Snapshot(at: now, modes: statuses, workers: workers, inflightJobs: jobs, inflightTotal: inflightTotal)
    }

    // MARK: dead letters

    public struct DeadEntry: Sendable {
        public var mode: Mode
        /// The entry exactly as stored, to remove it.
        public var raw: [UInt8]
        public var fields: [String: JSONValue]
        /// The shard whose dead list holds it (nil: the mode's only one).
        public var family: QueueFamily? = nil

        public var id: String? { fields["id"]?.stringValue }
        public var code: String { fields["code"]?.stringValue ?? "?" }
        public var reason: String { fields["reason"]?.stringValue ?? "" }
        public var at: Double? { fields["at"]?.doubleValue }
    }

    /// A fair family's tenants: jobs sorted and waiting (all priorities), and running (`Scripts.fairCounts`).
    public static func tenantCounts(_ family: QueueFamily, _ c: RedisConnection) throws(LLMQError) -> [TenantStatus] {
        let r = try c.command([Array("EVAL".utf8), Array(Scripts.fairCounts.utf8), Array("1".utf8), Array(family.running.utf8), Array(family.base.utf8)])
        if case .error(let e) = r { throw .redis("reading the tenants of \(family) failed: \(e)") }
        let a = r.array ?? []
        var out: [TenantStatus] = []
        for i in stride(from: 0, to: a.count - 2, by: 3) {
            out.append(TenantStatus(tenant: a[i].string ?? "", waiting: a[i + 1].integer ?? 0, running: a[i + 2].integer ?? 0))
        }
        return out
    }

    /// Entries of a mode's dead-letter lists (every shard's), newest first within each shard.
    public func deadEntries(mode: Mode, limit: Int = -1) throws(LLMQError) -> [DeadEntry] {
        var out: [DeadEntry] = []
        for family in families(mode) {
            if limit >= 0 && out.count >= limit { break }
            let want = limit < 0 ? -1 : limit - out.count - 1
            let r = try connection.command(["LRANGE", family.dead, "0", String(want)])
            out += (r.array ?? []).compactMap { v in
                guard let b = v.bytes else { return nil }
                return DeadEntry(mode: mode, raw: b, fields: (try? JSONValue.parse(b))?.objectValue ?? [:], family: family)
            }
        }
        return out
    }

    public enum RetryResult: Sendable, Equatable {
        case queued
        /// Someone else retried or purged it first.
        case gone
        case skipped(String)
    }

    /// Moves one dead job back onto its queue, atomically (the dead list and the
    /// queue share the `{MODE}` hash tag), with its attempt count reset.
    public func retry(_ entry: DeadEntry) throws(LLMQError) -> RetryResult {
        guard let text = entry.fields["job"]?.stringValue else {
            return .skipped("the entry holds no readable job (job_base64: not UTF-8)")
        }
        if entry.fields["job_truncated"]?.boolValue == true {
            let size = entry.fields["job_bytes"]?.intValue.map { "\($0) bytes" } ?? "larger"
            let hash = entry.fields["job_sha256"]?.stringValue.map { ", sha256 \($0)" } ?? ""
            return .skipped("the entry keeps only the job's first \(text.utf8.count) bytes (the job was \(size)\(hash)); push the original again")
        }
        guard case .object(var job)? = try? JSONValue.parse(Array(text.utf8)) else {
            return .skipped("the job is not a JSON object; fix it and push it again")
        }
        job.removeValue(forKey: "attempts")
        let script = """
            if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then return redis.call('LPUSH', KEYS[2], ARGV[2]) end
            return -1
            """
        let r = try connection.command([
            Array("EVAL".utf8), Array(script.utf8), Array("2".utf8), Array(deadKey(entry).utf8), Array(queueKey(entry).utf8),
            entry.raw, JSONValue.object(job).jsonBytes,
        ])
        if case .error(let e) = r { throw .redis("retrying a dead job failed: \(e)") }
        return r.integer == -1 ? .gone : .queued
    }

    /// Removes the given entries; returns how many were still there.
    public func purge(_ entries: [DeadEntry]) throws(LLMQError) -> Int {
        var n = 0
        for e in entries {
            n += try connection.command([Array("LREM".utf8), Array(deadKey(e).utf8), Array("1".utf8), e.raw]).integer ?? 0
        }
        return n
    }

    func deadKey(_ e: DeadEntry) -> String { e.family?.dead ?? keys.dead(e.mode) }
    func queueKey(_ e: DeadEntry) -> String { e.family?.queue ?? keys.queue(e.mode) }

    /// Empties a mode's dead-letter lists (every shard's); returns how many entries they held.
    public func purgeAll(mode: Mode) throws(LLMQError) -> Int {
        // A script rather than MULTI: it routes by its key on a cluster.
        var total = 0
        for family in families(mode) {
            let r = try connection.command(["EVAL", "local n = redis.call('LLEN', KEYS[1]) redis.call('DEL', KEYS[1]) return n", "1", family.dead])
            if case .error(let e) = r { throw .redis("emptying \(family.dead) failed: \(e)") }
            total += r.integer ?? 0
        }
        return total
    }

    // MARK: drain

    /// Asks a worker to drain (`PREFIX:control:WORKER` = `drain`); the request
    /// expires after `ttl` seconds so a worker started later under the same id is not drained by it.
    public func requestDrain(worker: String, ttl: Int = 3600) throws(LLMQError) {
        let r = try connection.command(["SET", keys.control(worker), "drain", "EX", String(ttl)])
        if case .error(let e) = r { throw .redis("cannot ask \(worker) to drain: \(e)") }
    }
}
