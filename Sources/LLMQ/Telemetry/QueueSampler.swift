import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Reads the farm's state from Redis every `interval` into gauges: pending,
/// in-flight, delayed (and of those, overdue) and dead jobs per mode, how long
/// the job next in line has waited, live workers. It is also the readiness probe: whether Redis answered, and,
/// for a worker, whether a drain was requested for it.
///
/// Runs in the process that serves /metrics (the supervisor, or a worker run
/// alone), on a thread and connection of its own. In-flight jobs are counted
/// from the in-flight lists of the workers in `PREFIX:workers`, not with SCAN,
/// whose cost grows with every request key in the database.
public final class QueueSampler: Service, Sendable {
    public struct Settings: Sendable {
        public var interval: Double = 1
        /// Heartbeats older than this do not count as live (the heartbeat's own expiry).
        public var heartbeatTTL: Double = 5
        /// A delayed job due for longer than this counts as overdue: workers move due jobs
        /// every few moments, so only a mode nobody serves (or a stuck mover) keeps any.
        public var overdueAfter: Double = 30

        public init(interval: Double = 1, heartbeatTTL: Double = 5) {
            self.interval = interval
            self.heartbeatTTL = heartbeatTTL
        }
    }

    let url: RedisURL
    let keys: Keys
    let modes: [Mode]
    let worker: String?
    let readiness: Readiness
    let settings: Settings
    let logger: Logger
    private let stopping = Atomic<Bool>(false)

    /// How the modes spread over key families, and which are fair (their tenants get gauges).
    public struct Scheduling: Sendable {
        public var shards: [Mode: Int] = [:]
        public var fairModes: Set<Mode> = []
        public var fair: FairSchedule?

        public init() {}

        public init(config: FarmConfig) {
            shards = config.shards
            fairModes = Set(config.modes.filter { $0.value.schedule == .fair }.keys)
            fair = FairSchedule(config: config)
        }
    }

    let scheduling: Scheduling

    /// `worker`: the id of the worker this process runs, whose drain requests make it unready.
    public init(url: RedisURL, keys: Keys, modes: [Mode], worker: String? = nil, readiness: Readiness,
                settings: Settings = .init(), scheduling: Scheduling = .init(), logger: Logger) {
        self.scheduling = scheduling
        self.url = url
        self.keys = keys
        self.modes = modes
        self.worker = worker
        self.readiness = readiness
        self.settings = settings
        self.logger = logger
    }

    public func run() async throws {
        await runOnThread(named: "llmq-sampler", loop: { self.loop() }, stop: { self.stopping.store(true, ordering: .sequentiallyConsistent) })
    }

    private struct Head {
        var hash: Int
        var count: Int
        var since: Double
    }

    private func loop() {
        var connection: RedisConnection?
        var failed = false
        var heads: [QueueFamily: Head] = [:]
        while !stopping.load(ordering: .sequentiallyConsistent) {
            do throws(LLMQError) {
                if connection == nil {
                    connection = try RedisConnection(url, connectTimeout: 2)
                    connection!.setTimeout(2)
                    if failed { FarmMetrics.redisReconnect(component: "sampler") }
                }
                try sample(connection!, heads: &heads)
                failed = false
            } catch {
                if !failed {
                    logger.warning("queue sampler: Redis unavailable; not ready until it answers", metadata: ["error": "\(error.message)"])
                }
                failed = true
                connection = nil
                readiness.probed(redisReachable: false)
            }
            var slept = 0.0
            while slept < settings.interval && !stopping.load(ordering: .sequentiallyConsistent) {
                usleep(50_000)
                slept += 0.05
            }
        }
    }

    private func sample(_ c: RedisConnection, heads: inout [QueueFamily: Head]) throws(LLMQError) {
        let now = Clock.unixTime()
        let members = try c.command(["ZRANGE", keys.workers, "0", "-1", "WITHSCORES"]).array ?? []
        var workers: [String] = []
        var live = 0
        for i in stride(from: 0, to: members.count - 1, by: 2) {
            guard let id = members[i].string else { continue }
            workers.append(id)
            if let score = members[i + 1].string.flatMap(Double.init), now - score <= settings.heartbeatTTL { live += 1 }
        }
        var count = 0
        let overdueMs = String(Int64((now - settings.overdueAfter) * 1000))
        for mode in modes {
            for family in QueueFamily.all(mode, shards: scheduling.shards[mode] ?? 1, keys: keys) {
                try c.append(["LLEN", family.queue])
                try c.append(["LLEN", family.dead])
                try c.append(["LINDEX", family.queue, "-1"])
                try c.append(["ZCARD", family.delayed])
                try c.append(["ZCOUNT", family.delayed, "-inf", overdueMs])
                for w in workers { try c.append(["LLEN", family.inflight(worker: w)]) }
                count += 5 + workers.count
                if scheduling.fairModes.contains(mode) {
                    try c.append([Array("EVAL".utf8), Array(Scripts.fairCounts.utf8), Array("1".utf8), Array(family.running.utf8), Array(family.base.utf8)])
                    count += 1
                }
            }
        }
        if let worker {
            try c.append(["GET", keys.control(worker)])
            try c.append(["HGET", keys.worker(worker), "state"])
            count += 2
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(count)
        for _ in 0..<count {
            let r = try c.reply()
            if case .error(let e) = r { throw .redis("queue sampler: \(e)") }
            replies.append(r)
        }
        var i = 0
        for mode in modes {
            var pending = 0, dead = 0, delayed = 0, overdue = 0, inflight = 0
            var age = 0.0
            var tenants: [String: (waiting: Int, running: Int)] = [:]
            for family in QueueFamily.all(mode, shards: scheduling.shards[mode] ?? 1, keys: keys) {
                pending += replies[i].integer ?? 0
                dead += replies[i + 1].integer ?? 0
                if let head = replies[i + 2].bytes {
                    let h = Head(hash: head.hashValue, count: head.count, since: now)
                    if let old = heads[family], old.hash == h.hash, old.count == h.count {
                        age = max(age, now - old.since)
                    } else {
                        heads[family] = h
                    }
                } else {
                    heads[family] = nil
                }
                delayed += replies[i + 3].integer ?? 0
                overdue += replies[i + 4].integer ?? 0
                i += 5
                for _ in workers {
                    inflight += replies[i].integer ?? 0
                    i += 1
                }
                if scheduling.fairModes.contains(mode) {
                    let a = replies[i].array ?? []
                    i += 1
                    for k in stride(from: 0, to: a.count - 2, by: 3) {
                        let label = scheduling.fair?.label(a[k].string ?? "") ?? ModelLabels.other
                        let w = a[k + 1].integer ?? 0
                        tenants[label, default: (0, 0)].waiting += w
                        tenants[label]!.running += a[k + 2].integer ?? 0
                        pending += w
                    }
                }
            }
            FarmMetrics.delayed(mode: mode, count: delayed, overdue: overdue)
            FarmMetrics.queue(mode: mode, pending: pending, inflight: inflight)
            FarmMetrics.deadLetters(mode: mode, count: dead)
            FarmMetrics.queueOldestAge(mode: mode, seconds: age)
            if scheduling.fairModes.contains(mode), let fair = scheduling.fair {
                // Every bounded label, so a tenant whose jobs all ended reads 0 rather than its last value.
                for label in Set(fair.tenants.keys).union(["none", ModelLabels.other]) {
                    let t = tenants[label] ?? (0, 0)
                    FarmMetrics.tenantQueue(mode: mode, tenant: label, running: t.running, waiting: t.waiting)
                }
            }
        }
        FarmMetrics.liveWorkers(live)
        var drain = false
        if worker != nil {
            drain = replies[i].string == "drain" || replies[i + 1].string == "draining"
        }
        readiness.probed(redisReachable: true, drainRequested: drain)
    }
}
