import Foundation
import Logging

/// Recovers the jobs a worker left in its in-flight lists when it died (or
/// when its own lease lapsed): each goes back to the head of its queue with the
/// attempt counted (and a `retry` event when output had gone out), or, with its
/// attempts spent, ends with `worker_lost` and goes to the dead list. A job
/// whose terminal event was already written is only acknowledged, so nothing
/// ends twice; a job that cannot be parsed is answered and buried at once, so a
/// job that kills workers cannot go round for ever.
///
/// In a `schedule: fair` family it then gives back the tenant shares the worker
/// held (`Scripts.fairRepair`): the jobs were moved with the fifo scripts, which
/// count nothing, so each share is given back exactly once.
///
/// A lock per dead worker (`SET NX` with expiry) keeps concurrent reapers on
/// many hosts from recovering the same list twice.
public struct Reaper: Sendable {
    let keys: Keys
    let url: RedisURL
    let me: String
    let defaultMaxAttempts: Int
    let resultTTL: Int
    let logTTL: Int
    let parser: JobParser
    /// Shards per mode (absent: 1), so every family's in-flight list is searched.
    let shards: [Mode: Int]
    let logger: Logger

    public init(keys: Keys, url: RedisURL, me: String, defaultMaxAttempts: Int, resultTTL: Int, logTTL: Int, maxJobBytes: Int = 1 << 20,
                shards: [Mode: Int] = [:], logger: Logger) {
        self.shards = shards
        self.keys = keys
        self.url = url
        self.me = me
        self.defaultMaxAttempts = defaultMaxAttempts
        self.resultTTL = resultTTL
        self.logTTL = logTTL
        self.parser = JobParser(maxBytes: maxJobBytes)
        self.logger = logger
    }

    /// Recovers every job of `worker` in the given modes; returns how many.
    @discardableResult
    public func recover(worker: String, modes: [Mode], connection c: RedisConnection) throws(LLMQError) -> Int {
        let lock = "\(keys.prefix):reap:\(worker)"
        guard case .status = try c.command(["SET", lock, me, "NX", "EX", "60"]) else { return 0 }
        defer { _ = try? c.command(["DEL", lock]) }
        var total = 0
        for family in modes.flatMap({ QueueFamily.all($0, shards: shards[$0] ?? 1, keys: keys) }) {
            let inflight = family.inflight(worker: worker)
            if let items = try c.command(["LRANGE", inflight, "0", "-1"]).array {
                for item in items.reversed() {
                    guard let raw = item.bytes else { continue }
                    try recoverOne(HeldJob(raw: raw, family: family, worker: worker), c)
                    total += 1
                }
            }
            var cmd: [UInt8] = []
            Scripts.appendEval(Scripts.fairRepair, keys: [family.running, family.runningBy(worker: worker), family.blocked, family.queue],
                               args: [Scripts.wakeMarker], to: &cmd)
            try run(cmd, count: 1, c)
        }
        return total
    }

    private func recoverOne(_ held: HeldJob, _ c: RedisConnection) throws(LLMQError) {
        var cmds: [UInt8] = []
        let job: Job
        do {
            job = try parser.parse(held.raw, mode: held.mode)
        } catch {
            // It never ran: answer and bury it here rather than hand it to the next worker.
            let dead = DeadLetter.entry(raw: held.raw, id: error.id, error: error.error, attempt: 1, worker: held.worker, now: Clock.unixTime())
            if let id = error.id {
                let stream = RequestStream(writer: EventWriter(id: id), keys: keys, logTTL: logTTL)
                stream.writer.error(error.error, attempt: 1)
                let result = ResultRecord(id: id, worker: held.worker, attempt: 1, metadata: nil, writer: nil, provider: nil, model: nil,
                                          error: error.error)
                try finish(held, stream, result: result, dead: dead, c)
            } else {
                let n = held.bury(dead, into: &cmds)
                try run(cmds, count: n, c)
            }
            FarmMetrics.deadLettered(mode: held.mode, code: error.error.code.rawValue)
            logger.warning("buried a job a lost worker held that is not a valid job", metadata: [
                "request_id": "\(error.id ?? "-")", "dead_worker": "\(held.worker)", "error": "\(error.error.message)",
            ])
            return
        }
        let id = job.id
        let lastLine = LogTail.line(try c.command(LogTail.command(keys, id: id)))
        let lastType = lastLine?["type"]?.stringValue
        if LogTail.isTerminal(lastLine) {
            let n = held.acknowledge(into: &cmds)
            try run(cmds, count: n, c)
            logger.info("acknowledged a finished job a lost worker still held", metadata: ["request_id": "\(id)", "dead_worker": "\(held.worker)"])
            return
        }
        let attempt = job.attempts + 1
        let maxAttempts = job.maxAttempts ?? defaultMaxAttempts
        let outputStarted = lastType != nil && lastType != "retry"
        let stream = RequestStream(writer: EventWriter(id: id), keys: keys, logTTL: logTTL)
        if outputStarted { stream.writer.resumeAttempt(lastSeq: lastLine?["seq"]?.intValue ?? 0) }
        if attempt >= maxAttempts {
            let error = LLMQError(.workerLost, "worker \(held.worker) was lost while running attempt \(attempt) of \(maxAttempts); no attempt is left",
                                  retryable: true)
            stream.writer.error(error, attempt: attempt)
            let result = ResultRecord(id: id, worker: held.worker, attempt: attempt, metadata: job.metadata, writer: nil, provider: nil, model: nil,
                                      error: error)
            let dead = DeadLetter.entry(raw: held.raw, id: id, error: error, attempt: attempt, worker: held.worker, now: Clock.unixTime())
            try finish(held, stream, result: result, dead: dead, c)
            FarmMetrics.deadLettered(mode: held.mode, code: error.code.rawValue)
            logger.warning("a lost worker's job has no attempt left", metadata: ["request_id": "\(id)", "dead_worker": "\(held.worker)"])
            return
        }
        if outputStarted { stream.writer.retry(nextAttempt: attempt + 1, reason: "worker_lost") }
        // The retry line is written before the job can start again elsewhere (on a cluster they are on two nodes).
        let lines = stream.drain(into: &cmds)
        try run(cmds, count: lines, c)
        cmds.removeAll(keepingCapacity: true)
        let n = held.requeue(as: HeldJob.rewrite(held.raw, attempts: attempt, timeoutLeft: nil), into: &cmds)
        try run(cmds, count: n, c)
        FarmMetrics.requeued(mode: held.mode, reason: "worker_lost")
        if outputStarted { FarmMetrics.retry(mode: held.mode, reason: "worker_lost") }
        logger.warning("put back a job a lost worker held", metadata: [
            "request_id": "\(id)", "dead_worker": "\(held.worker)", "attempt": "\(attempt)", "output_started": "\(outputStarted)",
        ])
    }

    /// The terminal write, and only once Redis took it, the way out of the in-flight list: on a
    /// cluster they live on two nodes, and a crash between them must leave the job held (it is then
    /// only acknowledged, its terminal event found in the log), never gone without its terminal event.
    private func finish(_ held: HeldJob, _ stream: RequestStream, result: ResultRecord, dead: [UInt8]?, _ c: RedisConnection) throws(LLMQError) {
        var cmds: [UInt8] = []
        let terminal = stream.drainTerminal(into: &cmds, result: result.json, resultTTL: resultTTL, runToken: result.run)
        try run(cmds, count: terminal, c)
        cmds.removeAll(keepingCapacity: true)
        let n = held.leave(dead: dead, into: &cmds)
        try run(cmds, count: n, c)
    }

    private func run(_ cmds: [UInt8], count: Int, _ c: RedisConnection) throws(LLMQError) {
        guard count > 0 else { return }
        try cmds.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
        var failure: String?
        for _ in 0..<count {
            if case .error(let e) = try c.reply() { failure = failure ?? e }
        }
        if let failure { throw .redis("recovering a job failed: \(failure)") }
    }
}
