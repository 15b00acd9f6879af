import Foundation
import Logging
import Synchronization

/// Moves jobs of one key family (a mode, or one shard of it) from the queue
/// into this worker's in-flight list, only while it holds a permit for each, on
/// a thread and connection of its own (BLMOVE blocks).
///
/// An unsharded `fifo` family blocks in BLMOVE holding a permit, as it always
/// did. A shard of a mode (its fetchers share the mode's permits) and a `fair`
/// family take without blocking and, when nothing was takeable, wait holding
/// no permit in a blocking peek (`BLMOVE queue queue RIGHT RIGHT`, which leaves
/// the list as it was), so an idle shard never sits on a permit another needs.
public final class JobFetcher: Sendable {
    let family: QueueFamily
    var mode: Mode { family.mode }
    /// Set for a `schedule: fair` family.
    let fair: FairSchedule?
    let queueKey: [UInt8]
    let inflightKey: [UInt8]
    let url: RedisURL
    let permits: Permits
    let deliver: @Sendable (HeldJob, UInt64, Bool) -> Void
    let worker: String
    let lease: Lease
    let keys: Keys
    let held: HeldJobs
    let onExit: @Sendable () -> Void
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    /// Seconds BLMOVE waits before it checks whether to stop.
    static let blockSeconds = "0.5"

    /// `deliver` gets each job with the lease epoch it was taken under and whether its cancel key was set.
    public convenience init(mode: Mode, keys: Keys, worker: String, url: RedisURL, permits: Permits, held: HeldJobs, lease: Lease, logger: Logger,
                            deliver: @escaping @Sendable (_ job: HeldJob, _ epoch: UInt64, _ cancelRequested: Bool) -> Void,
                            onExit: @escaping @Sendable () -> Void) {
        self.init(family: QueueFamily(mode: mode, shard: nil, keys: keys), fair: nil, worker: worker, url: url, permits: permits, held: held,
                  lease: lease, logger: logger, deliver: deliver, onExit: onExit)
    }

    /// One fetcher of `family`; `fair` when the mode is `schedule: fair`.
    public init(family: QueueFamily, fair: FairSchedule?, worker: String, url: RedisURL, permits: Permits, held: HeldJobs, lease: Lease,
                logger: Logger, deliver: @escaping @Sendable (_ job: HeldJob, _ epoch: UInt64, _ cancelRequested: Bool) -> Void,
                onExit: @escaping @Sendable () -> Void) {
        self.family = family
        self.fair = fair
        let keys = family.keys
        self.worker = worker
        self.lease = lease
        queueKey = Array(family.queue.utf8)
        inflightKey = Array(family.inflight(worker: worker).utf8)
        self.url = url
        self.keys = keys
        self.held = held
        self.permits = permits
        self.deliver = deliver
        self.onExit = onExit
        self.logger = logger
    }

    /// Fetches until stopped: by `stop` (a drain) or the service group's graceful shutdown.
    public func run() async {
        await runOnThread(named: "llmq-fetch-\(family)", loop: { self.loop(); self.onExit() }, stop: { self.stop() })
    }

    /// Stops taking jobs; the thread ends within `blockSeconds`.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        permits.close()
    }

    private var isStopping: Bool { stopping.load(ordering: .relaxed) }

    /// Delivers fetched jobs, each with whether its cancel key is set (one pipelined round trip).
    /// `tenants` holds each job's tenant bucket when a fair take counted it.
    private func hand(over jobs: [[UInt8]], tenants: [String]? = nil, epoch: UInt64, _ c: RedisConnection) throws(LLMQError) {
        let ids = jobs.map(JobParser.peekID)
        var asked = 0
        for id in ids {
            guard let id else { continue }
            try c.append(["EXISTS", keys.cancel(id)])
            asked += 1
        }
        var flags: [Bool] = []
        for _ in 0..<asked { flags.append(try c.reply().integer == 1) }
        var k = 0
        for (i, (job, id)) in zip(jobs, ids).enumerated() {
            held.add(job, family: family)
            var cancelled = false
            if id != nil {
                cancelled = flags[k]
                k += 1
            }
            deliver(HeldJob(raw: job, family: family, worker: worker, tenant: tenants?[i]), epoch, cancelled)
        }
    }

    /// Returns jobs fetched while the lease lapsed to the head of their queue, unchanged: they never ran.
    /// (The recovery after the lapse may have moved them already; the script moves each at most once.)
    private func putBack(_ jobs: [[UInt8]], tenants: [String]? = nil, _ c: RedisConnection) throws(LLMQError) {
        var cmds: [UInt8] = []
        for (i, j) in jobs.enumerated() { _ = HeldJob(raw: j, family: family, worker: worker, tenant: tenants?[i]).requeue(as: j, into: &cmds) }
        try cmds.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
        for _ in jobs { _ = try c.reply() }
    }

    /// Runs the jobs this worker's in-flight list holds but the worker never received.
    private func reconcile(_ c: RedisConnection) throws(LLMQError) {
        held.beginReconcile(family: family)
        let list = try c.command([Array("LRANGE".utf8), inflightKey, Array("0".utf8), Array("-1".utf8)]).array?.compactMap(\.bytes) ?? []
        var found = held.orphans(in: list, family: family)
        guard !found.isEmpty else { return }
        let buckets = fair.map { _ in found.map(FairSchedule.bucket) }
        let finished = try finishedAlready(found, c)
        if finished.contains(true) {
            var cmds: [UInt8] = []
            var n = 0
            for (i, job) in found.enumerated() where finished[i] {
                n += HeldJob(raw: job, family: family, worker: worker, tenant: buckets?[i]).acknowledge(into: &cmds)
            }
            try cmds.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
            for _ in 0..<n { _ = try c.reply() }
            logger.warning("acknowledged jobs that had ended here before the connection broke", metadata: [
                "mode": "\(family)", "jobs": "\(finished.filter { $0 }.count)",
            ])
            found = found.indices.filter { !finished[$0] }.map { found[$0] }
            guard !found.isEmpty else { return }
        }
        logger.warning("found jobs Redis moved to this worker while the connection broke; running them", metadata: [
            "mode": "\(family)", "jobs": "\(found.count)",
        ])
        let epoch = lease.epoch
        var taken = 0
        for _ in found {
            guard permits.acquire() else {
                permits.release(taken)
                return
            }
            taken += 1
        }
        do {
            try hand(over: found, tenants: fair.map { _ in found.map(FairSchedule.bucket) }, epoch: epoch, c)
        } catch {
            permits.release(taken)
            throw error
        }
    }

    /// Which of `jobs` already have their terminal event in their log: they ended on this worker and only the
    /// acknowledgement was lost (a failover took it), so running them again would end them twice.
    private func finishedAlready(_ jobs: [[UInt8]], _ c: RedisConnection) throws(LLMQError) -> [Bool] {
        let ids = jobs.map(JobParser.peekID)
        for id in ids { if let id { try c.append(LogTail.command(keys, id: id)) } }
        var out: [Bool] = []
        for id in ids {
            guard id != nil else {
                out.append(false)
                continue
            }
            out.append(LogTail.isTerminal(LogTail.line(try c.reply())))
        }
        return out
    }

    /// Shards and fair families take without blocking and wait for work holding no permit.
    private var takesWithoutBlocking: Bool { fair != nil || family.shard != nil }

    /// Moves up to `want` jobs into the in-flight list without blocking; with their tenant buckets when fair.
    private func take(_ want: Int, _ c: RedisConnection) throws(LLMQError) -> ([[UInt8]], [String]?) {
        if let fair {
            var cmd: [UInt8] = []
            fair.takeCommand(family, worker: worker, want: want, into: &cmd)
            try cmd.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
            let reply = try c.reply()
            if case .error(let e) = reply {
                // A refusal (a script error, an old Redis without RPOP's count) is not a lost connection: slow down, retry.
                logger.warning("Redis refused the fair take, retrying", metadata: ["mode": "\(family)", "error": "\(e)"])
                Thread.sleep(forTimeInterval: 0.1)
                return ([], [])
            }
            let items = reply.array ?? []
            var jobs: [[UInt8]] = []
            var tenants: [String] = []
            for i in stride(from: 0, to: items.count - 1, by: 2) {
                guard let job = items[i].bytes else { continue }
                jobs.append(job)
                tenants.append(items[i + 1].string ?? "")
            }
            for (t, n) in Dictionary(tenants.map { ($0, 1) }, uniquingKeysWith: +) {
                FarmMetrics.tenantStarted(mode: mode, tenant: fair.label(t), count: n)
            }
            return (jobs, tenants)
        }
        let lmove: [[UInt8]] = [Array("LMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8)]
        for _ in 0..<want { try c.append(lmove) }
        var jobs: [[UInt8]] = []
        for _ in 0..<want {
            if case .string(let j) = try c.reply() { jobs.append(j) }
        }
        return (jobs, nil)
    }

    /// Blocks until the queue holds something (a job, or a fair family's wake marker) or `blockSeconds` pass.
    private func waitForWork(_ c: RedisConnection) throws(LLMQError) {
        let reply = try c.command([Array("BLMOVE".utf8), queueKey, queueKey, Array("RIGHT".utf8), Array("RIGHT".utf8), Array(Self.blockSeconds.utf8)])
        if case .error(let e) = reply {
            logger.warning("Redis refused BLMOVE, retrying", metadata: ["mode": "\(family)", "error": "\(e)"])
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    private func loop() {
        var connection: RedisConnection?
        var backoff = 0.05
        let blmove: [[UInt8]] = [Array("BLMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8), Array(Self.blockSeconds.utf8)]
        let lmove: [[UInt8]] = [Array("LMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8)]
        // Set when a fetch failed midway: Redis may have moved a job whose reply never came.
        // Also at the start: whatever sits in the list by then was put there for this worker to run.
        var uncertain = true
        while !isStopping {
            if connection == nil {
                do {
                    connection = try RedisConnection(url)
                    backoff = 0.05
                    if uncertain {
                        try reconcile(connection!)
                        uncertain = false
                    }
                } catch {
                    logger.error("fetcher cannot reach Redis, retrying", metadata: ["mode": "\(mode)", "error": "\(error.message)"])
                    Thread.sleep(forTimeInterval: backoff)
                    backoff = min(backoff * 2, 2)
                    continue
                }
            }
            // A worker whose lease lapsed takes nothing new until it recovered what it held.
            if !lease.admitsWork() {
                Thread.sleep(forTimeInterval: 0.05)
                continue
            }
            if takesWithoutBlocking {
                guard permits.acquire() else { break }
                var unreleased = 1 + permits.tryAcquire(max: 31)
                let epoch = lease.epoch
                do {
                    let (jobs, tenants) = try take(unreleased, connection!)
                    permits.release(unreleased - jobs.count)
                    unreleased = jobs.count
                    if jobs.isEmpty {
                        try waitForWork(connection!)
                    } else if lease.epoch != epoch {
                        try putBack(jobs, tenants: tenants, connection!)
                        permits.release(unreleased)
                        unreleased = 0
                    } else {
                        try hand(over: jobs, tenants: tenants, epoch: epoch, connection!)
                        unreleased = 0
                    }
                } catch {
                    permits.release(unreleased)
                    uncertain = true
                    FarmMetrics.redisReconnect(component: "fetch")
                    logger.error("fetcher lost Redis, reconnecting", metadata: ["mode": "\(family)", "error": "\(error.message)"])
                    connection = nil
                }
                continue
            }
            guard permits.acquire() else { break }
            // Permits taken and not yet handed over with a job; given back if the fetch breaks.
            var unreleased = 1
            let epoch = lease.epoch
            do {
                let reply = try connection!.command(blmove)
                guard case .string(let job) = reply else {
                    permits.release()
                    unreleased = 0
                    if case .error(let e) = reply {
                        logger.warning("Redis refused BLMOVE, retrying", metadata: ["mode": "\(mode)", "error": "\(e)"])
                        Thread.sleep(forTimeInterval: 0.1)
                    }
                    continue
                }
                if lease.epoch != epoch {
                    try putBack([job], connection!)
                    permits.release()
                    continue
                }
                try hand(over: [job], epoch: epoch, connection!)
                unreleased = 0
                // A backlog is drained in pipelined batches rather than one round trip per job.
                var extra = permits.tryAcquire(max: 32)
                unreleased = extra
                while extra > 0 && !isStopping && lease.admitsWork() {
                    for _ in 0..<extra { try connection!.append(lmove) }
                    var got: [[UInt8]] = []
                    for _ in 0..<extra {
                        if case .string(let j) = try connection!.reply() { got.append(j) } else {
                            permits.release()
                            unreleased -= 1
                        }
                    }
                    if lease.epoch != epoch {
                        try putBack(got, connection!)
                        break
                    }
                    try hand(over: got, epoch: epoch, connection!)
                    unreleased = 0
                    extra = got.count == extra ? permits.tryAcquire(max: 32) : 0
                    unreleased = extra
                }
                if unreleased > 0 {
                    permits.release(unreleased)
                    unreleased = 0
                }
            } catch {
                // A BLMOVE may have moved a job before the connection broke; it stays in the
                // in-flight list and is recovered when this worker (or the reaper) restarts it.
                permits.release(unreleased)
                uncertain = true
                FarmMetrics.redisReconnect(component: "fetch")
                logger.error("fetcher lost Redis, reconnecting", metadata: ["mode": "\(mode)", "error": "\(error.message)"])
                connection = nil
            }
        }
    }
}
