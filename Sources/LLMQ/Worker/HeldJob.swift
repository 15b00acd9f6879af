import Foundation

/// One job as a worker holds it: its exact bytes in one in-flight list, and
/// every way it can leave that list. The runner and the reaper both end jobs
/// through it, so a job's last writes have one shape whoever makes them.
///
/// Each method appends its commands (RESP) to a batch and returns how many it
/// appended; the caller sends the batch. Every write is safe to send twice:
/// the terminal write is fenced by its run token, the moves by the job still
/// being in the in-flight list.
public struct HeldJob: Sendable {
    public let raw: [UInt8]
    /// The key family (mode and shard) whose in-flight list holds the job.
    public let family: QueueFamily
    public let worker: String
    /// The tenant bucket a `schedule: fair` fetch counted the job under; every way out gives it back.
    /// nil when nothing counted it (a `fifo` mode, the reaper, which repairs the counters itself).
    public let tenant: String?
    /// When this worker took the job from Redis (`Clock` nanoseconds), for `llmq_dispatch_seconds`.
    public var fetchedAt: UInt64?

    public var mode: Mode { family.mode }
    public var keys: Keys { family.keys }

    public init(raw: [UInt8], mode: Mode, worker: String, keys: Keys) {
        self.init(raw: raw, family: QueueFamily(mode: mode, shard: nil, keys: keys), worker: worker)
    }

    public init(raw: [UInt8], family: QueueFamily, worker: String, tenant: String? = nil) {
        self.raw = raw
        self.family = family
        self.worker = worker
        self.tenant = tenant
    }

    var inflight: String { family.inflight(worker: worker) }

    /// Removes the job from the in-flight list: it ended and its terminal write went before.
    public func acknowledge(into buf: inout [UInt8]) -> Int {
        if let tenant { return fairLeave(.ack, tenant: tenant, destination: family.queue, args: [], into: &buf) }
        // From the tail: jobs enter at the head, so the oldest (the likeliest to end) sit at the tail,
        // and a scan from the head would compare every newer job of a long in-flight list first.
        RESP.appendCommand(["LREM", inflight, "-1"], last: raw, to: &buf)
        return 1
    }

    /// Moves the job to its mode's dead list with `entry` (see `DeadLetter`).
    public func bury(_ entry: [UInt8], into buf: inout [UInt8]) -> Int {
        if let tenant { return fairLeave(.bury, tenant: tenant, destination: family.dead, args: [entry], into: &buf) }
        Scripts.appendEval(Scripts.bury, keys: [inflight, family.dead], args: [raw, entry], to: &buf)
        return 1
    }

    /// Puts the job back at the head of its queue as `rewritten`.
    public func requeue(as rewritten: [UInt8], into buf: inout [UInt8]) -> Int {
        if let tenant { return fairLeave(.requeue, tenant: tenant, destination: family.queue, args: [rewritten], into: &buf) }
        Scripts.appendEval(Scripts.requeue, keys: [inflight, family.queue], args: [raw, rewritten], to: &buf)
        return 1
    }

    /// Moves the job to its mode's delayed set as `rewritten`, due after `delay` seconds
    /// by Redis' clock, or at `notBefore` (Unix seconds) if that is later.
    public func delay(as rewritten: [UInt8], seconds delay: Double, notBefore: Double? = nil, into buf: inout [UInt8]) -> Int {
        // A non-finite time would trap in the conversion: it counts as "now".
        let ms = String(Int((delay.isFinite ? min(max(delay, 0), 1e10) : 0) * 1000))
        let absolute = notBefore.flatMap { $0.isFinite ? String(format: "%.0f", min(max($0, 0), 1e11) * 1000) : nil } ?? ""
        if let tenant {
            return fairLeave(.delay, tenant: tenant, destination: family.delayed, args: [rewritten, Array(ms.utf8), Array(absolute.utf8)], into: &buf)
        }
        Scripts.appendEval(Scripts.delay, keys: [inflight, family.delayed], args: [raw, rewritten, Array(ms.utf8), Array(absolute.utf8)], to: &buf)
        return 1
    }

    private func fairLeave(_ op: Scripts.FairExit, tenant: String, destination: String, args: [[UInt8]], into buf: inout [UInt8]) -> Int {
        Scripts.appendEval(
            Scripts.fairLeave, keys: [inflight, destination, family.running, family.runningBy(worker: worker), family.blocked, family.queue],
            args: [raw, Array(tenant.utf8), Array(op.rawValue.utf8), Scripts.wakeMarker] + args, to: &buf)
        return 1
    }

    /// The way out after a terminal write: the dead list when `dead` is given, else an acknowledgement.
    public func leave(dead: [UInt8]?, into buf: inout [UInt8]) -> Int {
        dead.map { bury($0, into: &buf) } ?? acknowledge(into: &buf)
    }

    /// The terminal write of a run (lines, log expiry, result) followed by the way out. For a
    /// single connection that stops at the first refusal (the reaper); the runner sends the two
    /// apart, so a refused terminal write is never followed by the acknowledgement.
    public func finish(_ stream: RequestStream, result: ResultRecord, resultTTL: Int, dead: [UInt8]?, into buf: inout [UInt8]) -> Int {
        let n = stream.drainTerminal(into: &buf, result: result.json, resultTTL: resultTTL, runToken: result.run)
        return n + leave(dead: dead, into: &buf)
    }

    /// The job's bytes with the fields a worker writes when it puts a job back:
    /// `attempts` (spent so far) and `timeout_s` (the budget left). Unchanged bytes when nothing changes.
    public static func rewrite(_ raw: [UInt8], attempts: Int?, timeoutLeft: Double?) -> [UInt8] {
        guard attempts != nil || timeoutLeft != nil, case .object(var o)? = try? JSONValue.parse(raw) else { return raw }
        if let attempts { o["attempts"] = .int(attempts) }
        if let timeoutLeft { o["timeout_s"] = .double((max(timeoutLeft, 0.001) * 1000).rounded(.up) / 1000) }
        return JSONValue.object(o).jsonBytes
    }
}

/// The result key's JSON (Schemas/result.schema.json), built in one place for every ending.
public struct ResultRecord: Sendable {
    public let run: String
    public let json: [UInt8]

    /// A token naming one terminal write, so a resent batch cannot write it twice.
    public static func runToken() -> String { "\(Clock.nowNanos())-\(UInt32.random(in: 0...UInt32.max))" }

    public init(id: String, worker: String, attempt: Int, metadata: JSONValue?, writer: EventWriter?, provider: String?, model: String?,
                outcome: Outcome? = nil, error: LLMQError? = nil) {
        run = Self.runToken()
        var result: [String: JSONValue] = [
            "id": .string(id), "status": .string(error == nil ? "done" : "error"), "attempt": .int(attempt), "worker": .string(worker),
            "text": .string(writer?.text ?? ""), "metadata": metadata ?? .object([:]), "run": .string(run),
        ]
        if let provider { result["provider"] = .string(provider) }
        if let model { result["model"] = .string(model) }
        if let outcome {
            result["finish_reason"] = .string(outcome.finishReason)
            result["usage"] = outcome.usage.json
            result["ttft_ms"] = outcome.ttftMs.map { .double(($0 * 10).rounded() / 10) } ?? .null
            result["duration_ms"] = .double((outcome.durationMs * 10).rounded() / 10)
        }
        if let error {
            result["error"] = ["code": .string(error.code.rawValue), "message": .string(error.message), "retryable": .bool(error.retryable)]
        }
        if let w = writer, !w.toolCalls.isEmpty {
            result["tool_calls"] = .array(w.toolCalls.map { tc in
                var args: [UInt8] = [UInt8(ascii: "\"")]
                args.append(contentsOf: tc.argumentsEscaped)
                args.append(UInt8(ascii: "\""))
                let text = (try? JSONValue.parse(args).stringValue) ?? ""
                return ["index": .int(tc.index), "call_id": .string(tc.callID), "name": .string(tc.name), "arguments": .string(text)]
            })
        }
        if let w = writer, w.embeddingCount > 0 { result["embeddings"] = .int(w.embeddingCount) }
        json = JSONValue.object(result).jsonBytes
    }
}
