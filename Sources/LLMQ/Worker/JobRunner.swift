import Foundation
import Logging
import Synchronization

/// Runs one job from the moment it sits in this worker's in-flight list to
/// its acknowledgement: parse, route, stream from the provider (falling back
/// to the next target before any output), publish the terminal event and the
/// result, and remove the job from the in-flight list.
public final class JobRunner: Sendable {
    public struct Settings: Sendable {
        public var worker: String
        public var keys: Keys
        public var resultTTL: Int
        public var logTTL: Int
        public var maxJobBytes: Int
        public var maxAttempts: Int = 3
        public var maxOutputBytes: Int = 4 << 20
        /// Exponential backoff between attempts: first delay and cap, seconds (full jitter).
        public var retryBase: Double = 0.25
        public var retryCap: Double = 10
    }

    let settings: Settings
    let registry: ProviderRegistry
    let engine: HTTPEngine
    let publisher: EventPublisher
    let parser: JobParser
    let logger: Logger
    private let active = Mutex<[String: JobHandle]>([:])
    /// Cancellations that arrived for ids not (yet) running here, with when they arrived.
    private let recentCancels = Mutex<[String: UInt64]>([:])
    private let draining = Atomic<Bool>(false)

    public init(settings: Settings, registry: ProviderRegistry, engine: HTTPEngine, publisher: EventPublisher, logger: Logger) {
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.publisher = publisher
        self.parser = JobParser(maxBytes: settings.maxJobBytes)
        self.logger = logger
    }

    /// Cuts every running transfer and backoff; their jobs go back to the queue.
    public func abortAll() {
        draining.store(true, ordering: .relaxed)
        for h in active.withLock({ Array($0.values) }) { h.drain() }
    }

    /// Cancels the job `id` if it runs here (its upstream transfer is aborted at
    /// once); otherwise remembers it for a minute in case it is about to start.
    public func cancel(id: String) {
        if let h = active.withLock({ $0[id] }) {
            h.cancel()
            return
        }
        let now = Clock.nowNanos()
        recentCancels.withLock { r in
            r = r.filter { now &- $0.value < 60_000_000_000 }
            r[id] = now
        }
    }

    private func register(_ id: String) -> JobHandle {
        let h = JobHandle(engine: engine)
        active.withLock { $0[id] = h }
        if recentCancels.withLock({ $0.removeValue(forKey: id) }) != nil { h.cancel() }
        if draining.load(ordering: .relaxed) { h.drain() }
        return h
    }

    private func unregister(_ id: String, _ h: JobHandle) {
        active.withLock { if $0[id] === h { $0.removeValue(forKey: id) } }
    }

    /// Runs one job; `cancelRequested` says its cancel key was set when it was fetched.
    public func run(raw: [UInt8], mode: String, cancelRequested: Bool = false) async {
        let t0 = Clock.nowNanos()
        let job: Job
        do {
            job = try parser.parse(raw, mode: mode)
        } catch {
            await reject(raw: raw, mode: mode, rejection: error)
            return
        }
        var log = logger
        log[metadataKey: "request_id"] = "\(job.id)"
        let stream = RequestStream(writer: EventWriter(id: job.id, maxOutputBytes: settings.maxOutputBytes), keys: settings.keys, logTTL: settings.logTTL)
        let writer = stream.writer
        stream.trace = JobTrace.start(job: job, worker: settings.worker, pickedUp: t0)
        let handle = register(job.id)
        defer { unregister(job.id, handle) }
        if cancelRequested { handle.cancel() }
        var attempt = job.attempts + 1
        let maxAttempts = job.maxAttempts ?? settings.maxAttempts

        if handle.isCancelled {
            await end(job, stream, error: LLMQError(.cancelled, "the request was cancelled before it started"), attempt: attempt, target: nil, t0: t0)
            return
        }
        if let d = job.deadline, Clock.unixTime() > d {
            await end(job, stream, error: LLMQError(.expired, "the job's deadline \(d) passed before a worker picked it up"), attempt: attempt, target: nil, t0: t0)
            return
        }
        let targets: [ProviderRegistry.Target]
        do {
            targets = try registry.resolve(job.model)
        } catch {
            await end(job, stream, error: error, attempt: attempt, target: nil, t0: t0, deadLetter: true)
            return
        }
        let budgetEnd = job.timeoutS.map { t0 + UInt64($0 * 1e9) }
        while true {
            let outcome = await runAttempt(job, stream, targets: targets, attempt: attempt, handle: handle, budgetEnd: budgetEnd, t0: t0, log: log)
            switch outcome {
            case .done(let o, let target):
                await finish(job, stream, status: "done", outcome: o, attempt: attempt, provider: target.provider.name, model: target.model)
                FarmMetrics.requestFinished(
                    mode: job.mode, provider: target.provider.name, model: target.model, outcome: "done", seconds: o.durationMs / 1000,
                    ttft: o.ttftMs.map { $0 / 1000 }, promptTokens: o.usage.promptTokens, completionTokens: o.usage.completionTokens)
                return
            case .drained:
                await requeue(job, stream, attempt: attempt, mode: mode)
                return
            case .failed(var error, let target):
                if handle.isCancelled { error = LLMQError(.cancelled, "the request was cancelled") }
                let remaining = budgetEnd.map { Double(Int64(bitPattern: $0 &- Clock.nowNanos())) / 1e9 } ?? .infinity
                let delay = backoff(attempt: attempt, retryAfter: error.retryAfter)
                guard error.retryable, error.code != .cancelled, attempt < maxAttempts, delay < remaining else {
                    if error.retryable && attempt >= maxAttempts && maxAttempts > 1 {
                        error.message += " (attempt \(attempt) of \(maxAttempts))"
                    }
                    await end(job, stream, error: error, attempt: attempt, target: target, t0: t0)
                    return
                }
                if writer.outputSent {
                    writer.retry(nextAttempt: attempt + 1, reason: error.code.rawValue)
                    publisher.submit { stream.drain(into: &$0) }
                }
                FarmMetrics.retry(mode: job.mode, reason: error.code.rawValue)
                log.info("retrying", metadata: ["attempt": "\(attempt)", "code": "\(error.code)", "delay_s": "\(String(format: "%.2f", delay))"])
                await handle.pause(delay)
                attempt += 1
                if handle.isDrained && !handle.isCancelled {
                    await requeue(job, stream, attempt: attempt - 1, mode: mode, announced: true)
                    return
                }
            }
        }
    }

    enum AttemptOutcome {
        case done(Outcome, ProviderRegistry.Target)
        case failed(LLMQError, ProviderRegistry.Target?)
        case drained
    }

    /// One attempt: the route's targets in order, moving on only while no output went out.
    private func runAttempt(_ job: Job, _ stream: RequestStream, targets: [ProviderRegistry.Target], attempt: Int, handle: JobHandle,
                            budgetEnd: UInt64?, t0: UInt64, log: Logger) async -> AttemptOutcome {
        let writer = stream.writer
        var lastError = LLMQError(.internal, "no target was tried")
        var last: ProviderRegistry.Target?
        for (i, target) in targets.enumerated() {
            if handle.isCancelled { return .failed(LLMQError(.cancelled, "the request was cancelled"), last) }
            if handle.isDrained { return .drained }
            last = target
            var remaining: Double?
            if let budgetEnd {
                let now = Clock.nowNanos()
                guard now < budgetEnd else {
                    return .failed(LLMQError(.timeout, "the job's timeout_s of \(job.timeoutS!) s ran out"), target)
                }
                remaining = Double(budgetEnd - now) / 1e9
            }
            let provider = target.provider
            if let wait = await registry.cooldowns.remaining(provider.name) {
                // The farm backs off together: skip a cooling provider; on the last target, end rate_limited.
                lastError = LLMQError(.rateLimited, "\(provider.name) is cooling down for \(String(format: "%.1f", wait)) s more, shared by the farm after 429s or repeated failures", retryable: true, retryAfter: wait)
                if i + 1 < targets.count { continue }
                break
            }
            writer.beginAttempt(attempt: attempt, worker: settings.worker, provider: provider.name, model: target.model, metadata: job.metadata)
            let request: HTTPRequest
            do {
                request = try provider.makeRequest(job: job, model: target.model, timeout: remaining)
            } catch {
                lastError = error
                if !Self.fallsBack(error) { break }
                continue
            }
            let decoder = provider.makeDecoder(job: job, writer: writer)
            let permit = await registry.limiter.acquire(provider.name)  // max_concurrency per provider
            defer { if permit { registry.limiter.release(provider.name) } }
            let token = TransferToken()
            guard handle.begin(token) else {
                return handle.isCancelled ? .failed(LLMQError(.cancelled, "the request was cancelled"), target) : .drained
            }
            let call = stream.trace?.providerCall(provider: provider.name, model: target.model, attempt: attempt)
            let result = await engine.perform(request, decoder: decoder, output: stream, token: token)
            handle.end()
            stream.trace?.endProviderCall(call, result: result, decoderFailure: decoder.failure, complete: decoder.complete, firstOutputAt: writer.firstOutputAt)

            if result.completed && result.isHTTPSuccess && decoder.failure == nil && decoder.complete {
                let outcome = Outcome(
                    finishReason: decoder.finishReason ?? "stop", usage: decoder.usage,
                    ttftMs: writer.firstOutputAt.map { Clock.millis(since: t0, to: $0) },
                    durationMs: Clock.millis(since: t0), metadata: job.metadata)
                writer.done(outcome)
                registry.cooldowns.record(provider.name, error: nil)
                return .done(outcome, target)
            }
            switch result.aborted {
            case .drain?: return .drained
            case .cancelled?: return .failed(LLMQError(.cancelled, "the request was cancelled while it ran"), target)
            default: break
            }
            lastError = decoder.failure ?? provider.error(for: result)
            if budgetEnd != nil && result.curlCode == 28 && (remaining ?? .infinity) < provider.config.timeoutS {
                lastError = LLMQError(.timeout, "the job's timeout_s of \(job.timeoutS!) s ran out", retryable: false)
            }
            registry.cooldowns.record(provider.name, error: lastError)
            log.warning("upstream attempt failed", metadata: [
                "provider": "\(provider.name)", "model": "\(target.model)", "attempt": "\(attempt)",
                "code": "\(lastError.code)", "error": "\(registry.redact(lastError.message))",
            ])
            if writer.outputSent || !Self.fallsBack(lastError) { break }
            if i + 1 < targets.count { FarmMetrics.fallback(mode: job.mode, provider: provider.name) }
        }
        return .failed(lastError, last)
    }

    /// Full-jitter exponential backoff, never shorter than what the upstream asked for.
    func backoff(attempt: Int, retryAfter: Double?) -> Double {
        let ceiling = min(settings.retryCap, settings.retryBase * pow(2, Double(max(0, attempt - 1))))
        let jittered = Double.random(in: 0...ceiling)
        return max(jittered, retryAfter ?? 0)
    }

    /// Whether an error before any output moves on to the route's next target.
    static func fallsBack(_ e: LLMQError) -> Bool {
        switch e.code {
        case .badRequest, .cancelled, .expired, .invalidJob: false
        default: true
        }
    }

    /// Ends a job with a terminal error.
    private func end(_ job: Job, _ stream: RequestStream, error: LLMQError, attempt: Int, target: ProviderRegistry.Target?, t0: UInt64,
                     deadLetter: Bool = false) async {
        var error = error
        error.message = registry.redact(error.message)
        stream.writer.error(error, attempt: attempt)
        // Failed for good goes to the dead list; a cancellation or an expiry is what the producer asked for.
        let dead = deadLetter || (error.code != .cancelled && error.code != .expired)
        await finish(job, stream, status: "error", error: error, attempt: attempt, provider: target?.provider.name, model: target?.model, deadLetter: dead)
        if error.code == .cancelled { FarmMetrics.cancelled(mode: job.mode) }
        if dead { FarmMetrics.deadLettered(mode: job.mode, code: error.code.rawValue) }
        FarmMetrics.requestFinished(
            mode: job.mode, provider: target?.provider.name ?? "none", model: target?.model ?? job.model, outcome: error.code.rawValue,
            seconds: Clock.millis(since: t0) / 1000, ttft: nil, promptTokens: nil, completionTokens: nil)
    }

    // MARK: endings

    private func finish(_ job: Job, _ stream: RequestStream, status: String, outcome: Outcome? = nil, error: LLMQError? = nil,
                        attempt: Int, provider: String?, model: String?, deadLetter: Bool = false) async {
        let w = stream.writer
        stream.trace?.finish(
            outcome: error?.code.rawValue ?? status, attempt: attempt, provider: provider, model: model, firstOutputAt: w.firstOutputAt,
            promptTokens: outcome?.usage.promptTokens, completionTokens: outcome?.usage.completionTokens, message: error?.message)
        var result: [String: JSONValue] = [
            "id": .string(job.id), "status": .string(status), "attempt": .int(attempt), "worker": .string(settings.worker),
            "text": .string(w.text), "metadata": job.metadata ?? .object([:]),
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
        if !w.toolCalls.isEmpty {
            result["tool_calls"] = .array(w.toolCalls.map { tc in
                var args: [UInt8] = [UInt8(ascii: "\"")]
                args.append(contentsOf: tc.argumentsEscaped)
                args.append(UInt8(ascii: "\""))
                let text = (try? JSONValue.parse(args).stringValue) ?? ""
                return ["index": .int(tc.index), "call_id": .string(tc.callID), "name": .string(tc.name), "arguments": .string(text)]
            })
        }
        if w.embeddingCount > 0 { result["embeddings"] = .int(w.embeddingCount) }
        let run = Self.runToken()
        result["run"] = .string(run)
        let resultBytes = JSONValue.object(result).jsonBytes
        let dead = deadLetter ? deadEntry(raw: job.raw, id: job.id, error: error!, attempt: attempt) : nil
        await publisher.send { buf in
            stream.drainTerminal(into: &buf, result: resultBytes, resultTTL: settings.resultTTL, runToken: run)
                + acknowledge(raw: job.raw, mode: job.mode, dead: dead, into: &buf)
        }
    }

    /// A token naming one terminal write, so a resent batch cannot write it twice.
    static func runToken() -> String { "\(Clock.nowNanos())-\(UInt32.random(in: 0...UInt32.max))" }

    /// Removes a job from the in-flight list, into the dead list when `dead` is given (at most once).
    private func acknowledge(raw: [UInt8], mode: String, dead: [UInt8]?, into buf: inout [UInt8]) -> Int {
        let inflight = settings.keys.inflight(mode, worker: settings.worker)
        if let dead {
            Scripts.appendEval(Scripts.bury, keys: [inflight, settings.keys.dead(mode)], args: [raw, dead], to: &buf)
        } else {
            RESP.appendCommand(["LREM", inflight, "1"], last: raw, to: &buf)
        }
        return 1
    }

    private func reject(raw: [UInt8], mode: String, rejection: JobRejection) async {
        FarmMetrics.deadLettered(mode: mode, code: rejection.error.code.rawValue)
        logger.warning("rejected a job", metadata: [
            "request_id": "\(rejection.id ?? "-")", "mode": "\(mode)", "error": "\(rejection.error.message)",
        ])
        let dead = deadEntry(raw: raw, id: rejection.id, error: rejection.error, attempt: 1)
        var stream: RequestStream?
        var resultBytes: [UInt8] = []
        let run = Self.runToken()
        if let id = rejection.id {
            let s = RequestStream(writer: EventWriter(id: id), keys: settings.keys, logTTL: settings.logTTL)
            s.writer.error(rejection.error, attempt: 1)
            stream = s
            let error: [String: JSONValue] = [
                "code": .string(rejection.error.code.rawValue), "message": .string(rejection.error.message), "retryable": .bool(false),
            ]
            var o: [String: JSONValue] = ["id": .string(id), "status": .string("error"), "attempt": .int(1)]
            o["worker"] = .string(settings.worker)
            o["run"] = .string(run)
            o["error"] = .object(error)
            resultBytes = JSONValue.object(o).jsonBytes
        }
        await publisher.send { buf in
            var n = 0
            if let stream { n += stream.drainTerminal(into: &buf, result: resultBytes, resultTTL: settings.resultTTL, runToken: run) }
            return n + acknowledge(raw: raw, mode: mode, dead: dead, into: &buf)
        }
    }

    /// Puts a job back at the head of its queue. When output had gone out the
    /// attempt counts, and subscribers hear `retry`; otherwise it goes back unchanged.
    private func requeue(_ job: Job, _ stream: RequestStream, attempt: Int, mode: String, announced: Bool = false) async {
        let writer = stream.writer
        var newRaw = job.raw
        if writer.outputSent || announced {
            if !announced { writer.retry(nextAttempt: attempt + 1, reason: "worker_drained") }
            if case .object(var o)? = try? JSONValue.parse(job.raw) {
                o["attempts"] = .int(attempt)
                newRaw = JSONValue.object(o).jsonBytes
            }
        }
        FarmMetrics.requeued(mode: mode, reason: "drain")
        stream.trace?.finish(outcome: "requeued", attempt: attempt, provider: nil, model: nil, firstOutputAt: writer.firstOutputAt)
        logger.info("put a job back on its queue", metadata: ["request_id": "\(job.id)", "attempt": "\(attempt)"])
        let keys = settings.keys
        await publisher.send { buf in
            let n = stream.drain(into: &buf)
            Scripts.appendEval(Scripts.requeue, keys: [keys.inflight(mode, worker: settings.worker), keys.queue(mode)], args: [job.raw, newRaw], to: &buf)
            return n + 1
        }
    }

    func deadEntry(raw: [UInt8], id: String?, error: LLMQError, attempt: Int) -> [UInt8] {
        var o: [String: JSONValue] = [
            "code": .string(error.code.rawValue), "reason": .string(error.message), "worker": .string(settings.worker),
            "at": .double((Clock.unixTime() * 1000).rounded() / 1000), "attempt": .int(attempt),
        ]
        if let id { o["id"] = .string(id) }
        if let s = String(validating: raw, as: UTF8.self) {
            o["job"] = .string(s)
        } else {
            o["job_base64"] = .string(Data(raw).base64EncodedString())
        }
        return JSONValue.object(o).jsonBytes
    }
}
