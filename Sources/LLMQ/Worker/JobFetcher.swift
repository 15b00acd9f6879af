import Foundation
import Logging
import Synchronization

/// Moves jobs of one mode from the queue into this worker's in-flight list,
/// only while it holds a permit for each, on a thread and connection of its
/// own (BLMOVE blocks).
public final class JobFetcher: Sendable {
    let mode: Mode
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
    public init(mode: Mode, keys: Keys, worker: String, url: RedisURL, permits: Permits, held: HeldJobs, lease: Lease, logger: Logger,
                deliver: @escaping @Sendable (_ job: HeldJob, _ epoch: UInt64, _ cancelRequested: Bool) -> Void,
                onExit: @escaping @Sendable () -> Void) {
        self.mode = mode
        self.worker = worker
        self.lease = lease
        queueKey = Array(keys.queue(mode).utf8)
        inflightKey = Array(keys.inflight(mode, worker: worker).utf8)
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
        await runOnThread(named: "llmq-fetch-\(mode)", loop: { self.loop(); self.onExit() }, stop: { self.stop() })
    }

    /// Stops taking jobs; the thread ends within `blockSeconds`.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        permits.close()
    }

    private var isStopping: Bool { stopping.load(ordering: .relaxed) }

    /// Delivers fetched jobs, each with whether its cancel key is set (one pipelined round trip).
    private func hand(over jobs: [[UInt8]], epoch: UInt64, _ c: RedisConnection) throws(LLMQError) {
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
        for (job, id) in zip(jobs, ids) {
            held.add(job, mode: mode)
            var cancelled = false
            if id != nil {
                cancelled = flags[k]
                k += 1
            }
            deliver(HeldJob(raw: job, mode: mode, worker: worker, keys: keys), epoch, cancelled)
        }
    }

    /// Returns jobs fetched while the lease lapsed to the head of their queue, unchanged: they never ran.
    /// (The recovery after the lapse may have moved them already; the script moves each at most once.)
    private func putBack(_ jobs: [[UInt8]], _ c: RedisConnection) throws(LLMQError) {
        var cmds: [UInt8] = []
        for j in jobs { _ = HeldJob(raw: j, mode: mode, worker: worker, keys: keys).requeue(as: j, into: &cmds) }
        try cmds.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
        for _ in jobs { _ = try c.reply() }
    }

    /// Runs the jobs this worker's in-flight list holds but the worker never received.
    private func reconcile(_ c: RedisConnection) throws(LLMQError) {
        held.beginReconcile(mode: mode)
        let list = try c.command([Array("LRANGE".utf8), inflightKey, Array("0".utf8), Array("-1".utf8)]).array?.compactMap(\.bytes) ?? []
        let found = held.orphans(in: list, mode: mode)
        guard !found.isEmpty else { return }
        logger.warning("found jobs Redis moved to this worker while the connection broke; running them", metadata: [
            "mode": "\(mode)", "jobs": "\(found.count)",
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
            try hand(over: found, epoch: epoch, c)
        } catch {
            permits.release(taken)
            throw error
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
