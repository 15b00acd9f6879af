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
    /// `LMOVE queue in-flight RIGHT LEFT`, the non-blocking take.
    let lmove: [[UInt8]]
    let url: RedisURL
    let permits: Permits
    let deliver: @Sendable (HeldJob, UInt64, CancelKeyAnswer) -> Void
    let worker: String
    let lease: Lease
    let keys: Keys
    let held: HeldJobs
    let onExit: @Sendable () -> Void
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    /// Seconds BLMOVE waits before it checks whether to stop.
    static let blockSeconds = "0.5"

    /// `deliver` gets each job with the lease epoch it was taken under and whether its cancel key was set
    /// (answered after the hand-over, see `CancelKeyAnswer`).
    public convenience init(mode: Mode, keys: Keys, worker: String, url: RedisURL, permits: Permits, held: HeldJobs, lease: Lease, logger: Logger,
                            deliver: @escaping @Sendable (_ job: HeldJob, _ epoch: UInt64, _ cancelKey: CancelKeyAnswer) -> Void,
                            onExit: @escaping @Sendable () -> Void) {
        self.init(family: QueueFamily(mode: mode, shard: nil, keys: keys), fair: nil, worker: worker, url: url, permits: permits, held: held,
                  lease: lease, logger: logger, deliver: deliver, onExit: onExit)
    }

    /// One fetcher of `family`; `fair` when the mode is `schedule: fair`.
    public init(family: QueueFamily, fair: FairSchedule?, worker: String, url: RedisURL, permits: Permits, held: HeldJobs, lease: Lease,
                logger: Logger, deliver: @escaping @Sendable (_ job: HeldJob, _ epoch: UInt64, _ cancelKey: CancelKeyAnswer) -> Void,
                onExit: @escaping @Sendable () -> Void) {
        self.family = family
        self.fair = fair
        let keys = family.keys
        self.worker = worker
        self.lease = lease
        queueKey = Array(family.queue.utf8)
        inflightKey = Array(family.inflight(worker: worker).utf8)
        lmove = [Array("LMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8)]
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

    /// A delivered job whose cancel key is still to be read.
    struct Unanswered {
        let key: String
        let answer: CancelKeyAnswer
    }

    /// Delivers fetched jobs at once; their cancel keys are read by the next `ask`.
    /// `tenants` holds each job's tenant bucket when a fair take counted it.
    private func hand(over jobs: [[UInt8]], tenants: [String]? = nil, epoch: UInt64) -> [Unanswered] {
        var asked: [Unanswered] = []
        let now = Clock.nowNanos()
        for (i, job) in jobs.enumerated() {
            held.add(job, family: family)
            var answer = Self.notCancelled
            if let id = JobParser.peekID(job) {
                answer = CancelKeyAnswer()
                asked.append(Unanswered(key: keys.cancel(id), answer: answer))
            }
            var h = HeldJob(raw: job, family: family, worker: worker, tenant: tenants?[i])
            h.fetchedAt = now
            deliver(h, epoch, answer)
        }
        return asked
    }

    /// A job without a readable id is rejected before anything could cancel it.
    private static let notCancelled = CancelKeyAnswer(false)

    /// Reads the cancel keys of `asked` and, in the same round trip, sends `moves` LMOVEs; returns what each moved.
    /// A broken connection answers "not set": a cancel then reaches the job only through `llmq:cancel`.
    private func ask(_ asked: [Unanswered], moves: Int, _ c: RedisConnection) throws(LLMQError) -> [RedisReply] {
        do {
            for a in asked { try c.append(["EXISTS", a.key]) }
            for _ in 0..<moves { try c.append(lmove) }
            for a in asked { a.answer.resolve(try c.reply().integer == 1) }
            var out: [RedisReply] = []
            for _ in 0..<moves { out.append(try c.reply()) }
            return out
        } catch {
            for a in asked { a.answer.resolve(false) }
            throw error
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
        _ = try ask(hand(over: found, tenants: fair.map { _ in found.map(FairSchedule.bucket) }, epoch: epoch), moves: 0, c)
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

    /// A fetch broke: gives back the permits it held, and counts and logs the lost connection.
    private func lost(_ error: LLMQError, unreleased: Int) {
        permits.release(unreleased)
        FarmMetrics.redisReconnect(component: "fetch")
        logger.error("fetcher lost Redis, reconnecting", metadata: ["mode": "\(family)", "error": "\(error.message)"])
    }

    private func loop() {
        var connection: RedisConnection?
        var backoff = 0.05
        let blmove: [[UInt8]] = [Array("BLMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8), Array(Self.blockSeconds.utf8)]
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
                        unreleased = 0
                        _ = try ask(hand(over: jobs, tenants: tenants, epoch: epoch), moves: 0, connection!)
                    }
                } catch {
                    lost(error, unreleased: unreleased)
                    uncertain = true
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
                unreleased = 0
                var asked = hand(over: [job], epoch: epoch)
                // A backlog is drained in pipelined batches rather than one round trip per job; each round trip
                // also reads the cancel keys of the jobs the previous one delivered.
                var extra = permits.tryAcquire(max: 32)
                unreleased = extra
                while true {
                    let moves = extra > 0 && !isStopping && lease.admitsWork() ? extra : 0
                    permits.release(extra - moves)
                    unreleased = moves
                    let replies = try ask(asked, moves: moves, connection!)
                    asked = []
                    var got: [[UInt8]] = []
                    for r in replies {
                        if case .string(let j) = r { got.append(j) } else {
                            permits.release()
                            unreleased -= 1
                        }
                    }
                    guard !got.isEmpty else { break }
                    if lease.epoch != epoch {
                        try putBack(got, connection!)
                        break
                    }
                    unreleased = 0
                    asked = hand(over: got, epoch: epoch)
                    extra = got.count == moves ? permits.tryAcquire(max: 32) : 0
                    unreleased = extra
                }
                if unreleased > 0 {
                    permits.release(unreleased)
                    unreleased = 0
                }
            } catch {
                // A BLMOVE may have moved a job before the connection broke; it stays in the
                // in-flight list and is recovered when this worker (or the reaper) restarts it.
                lost(error, unreleased: unreleased)
                uncertain = true
                connection = nil
            }
        }
    }
}
