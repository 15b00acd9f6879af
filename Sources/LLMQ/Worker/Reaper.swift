import Foundation
import Logging

/// Recovers the jobs a worker left in its in-flight lists when it died:
/// each goes back to the head of its queue with the attempt counted (and a
/// `retry` event when output had gone out), or, with its attempts spent, ends
/// with `worker_lost` and goes to the dead list. A job whose terminal event
/// was already written is only acknowledged, so nothing ends twice.
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
    let logger: Logger

    public init(keys: Keys, url: RedisURL, me: String, defaultMaxAttempts: Int, resultTTL: Int, logTTL: Int, logger: Logger) {
        self.keys = keys
        self.url = url
        self.me = me
        self.defaultMaxAttempts = defaultMaxAttempts
        self.resultTTL = resultTTL
        self.logTTL = logTTL
        self.logger = logger
    }

    /// Recovers every job of `worker` in the given modes; returns how many.
    @discardableResult
    public func recover(worker: String, modes: [String], connection c: RedisConnection) throws(LLMQError) -> Int {
        let lock = "\(keys.prefix):reap:\(worker)"
        guard case .status = try c.command(["SET", lock, me, "NX", "EX", "60"]) else { return 0 }
        defer { _ = try? c.command(["DEL", lock]) }
        var total = 0
        for mode in modes {
            let inflight = keys.inflight(mode, worker: worker)
            guard let items = try c.command(["LRANGE", inflight, "0", "-1"]).array else { continue }
            for item in items.reversed() {
                guard let raw = item.bytes else { continue }
                try recoverOne(raw: raw, mode: mode, inflight: inflight, worker: worker, c)
                total += 1
            }
        }
        return total
    }

    private func recoverOne(raw: [UInt8], mode: String, inflight: String, worker: String, _ c: RedisConnection) throws(LLMQError) {
        let object = (try? JSONValue.parse(raw))?.objectValue
        let id = object?["id"]?.stringValue.flatMap { Job.isValidID($0) ? $0 : nil }
        var cmds: [UInt8] = []
        var n = 0
        guard let id, let object else {
            // Unreadable: the worker died before it could dead-letter it; put it back so a worker does.
            RESP.appendCommand(["RPUSH", keys.queue(mode)], last: raw, to: &cmds)
            RESP.appendCommand(["LREM", inflight, "1"], last: raw, to: &cmds)
            try run(cmds, count: 2, c)
            return
        }
        let last = try c.command(["XREVRANGE", keys.log(id), "+", "-", "COUNT", "1"]).array?.first?.array?.last?.array
        let lastLine = last.flatMap { f in f.count >= 2 ? f[1].bytes : nil }.flatMap { try? JSONValue.parse($0) }
        let lastType = lastLine?["type"]?.stringValue
        if lastType == "done" || lastType == "error" {
            RESP.appendCommand(["LREM", inflight, "1"], last: raw, to: &cmds)
            try run(cmds, count: 1, c)
            logger.info("acknowledged a finished job a dead worker still held", metadata: ["request_id": "\(id)", "dead_worker": "\(worker)"])
            return
        }
        let attempts = object["attempts"]?.intValue ?? 0
        let attempt = attempts + 1
        let maxAttempts = object["max_attempts"]?.intValue ?? defaultMaxAttempts
        let outputStarted = lastType != nil && lastType != "retry"
        let stream = RequestStream(writer: EventWriter(id: id), keys: keys, logTTL: logTTL)
        if outputStarted { stream.writer.resumeAttempt(lastSeq: lastLine?["seq"]?.intValue ?? 0) }
        if attempt >= maxAttempts {
            let error = LLMQError(.workerLost, "worker \(worker) was lost while running attempt \(attempt) of \(maxAttempts); no attempt is left")
            stream.writer.error(error, attempt: attempt)
            n += stream.drain(into: &cmds)
            let errorObject: [String: JSONValue] = [
                "code": .string(error.code.rawValue), "message": .string(error.message), "retryable": .bool(true),
            ]
            var r: [String: JSONValue] = ["id": .string(id), "status": .string("error"), "attempt": .int(attempt)]
            r["worker"] = .string(worker)
            r["run"] = .string(JobRunner.runToken())
            r["text"] = .string("")
            r["metadata"] = object["metadata"] ?? .object([:])
            r["error"] = .object(errorObject)
            let result = JSONValue.object(r).jsonBytes
            var d: [String: JSONValue] = ["id": .string(id), "code": .string(error.code.rawValue), "reason": .string(error.message)]
            d["worker"] = .string(worker)
            d["at"] = .double((Clock.unixTime() * 1000).rounded() / 1000)
            d["attempt"] = .int(attempt)
            d["job"] = .string(String(decoding: raw, as: UTF8.self))
            let dead = JSONValue.object(d).jsonBytes
            RESP.appendCommand(["SET", keys.result(id)], last: result, to: &cmds)
            RESP.appendCommand(["EXPIRE", keys.result(id), String(resultTTL)], to: &cmds)
            Scripts.appendEval(Scripts.bury, keys: [inflight, keys.dead(mode)], args: [raw, dead], to: &cmds)
            try run(cmds, count: n + 3, c)
            logger.warning("a lost worker's job has no attempt left", metadata: ["request_id": "\(id)", "dead_worker": "\(worker)"])
            return
        }
        if outputStarted { stream.writer.retry(nextAttempt: attempt + 1, reason: "worker_lost") }
        n += stream.drain(into: &cmds)
        var o = object
        o["attempts"] = .int(attempt)
        let newRaw = JSONValue.object(o).jsonBytes
        Scripts.appendEval(Scripts.requeue, keys: [inflight, keys.queue(mode)], args: [raw, newRaw], to: &cmds)
        try run(cmds, count: n + 1, c)
        FarmMetrics.requeued(mode: mode, reason: "worker_lost")
        if outputStarted { FarmMetrics.retry(mode: mode, reason: "worker_lost") }
        logger.warning("put back a job a lost worker held", metadata: [
            "request_id": "\(id)", "dead_worker": "\(worker)", "attempt": "\(attempt)", "output_started": "\(outputStarted)",
        ])
    }

    private func run(_ cmds: [UInt8], count: Int, _ c: RedisConnection) throws(LLMQError) {
        try cmds.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
        for _ in 0..<count {
            if case .error(let e) = try c.reply() { throw .redis("recovering a job failed: \(e)") }
        }
    }
}
