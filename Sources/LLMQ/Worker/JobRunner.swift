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
    }

    let settings: Settings
    let registry: ProviderRegistry
    let engine: HTTPEngine
    let publisher: EventPublisher
    let parser: JobParser
    let logger: Logger
    private let active = Mutex<[ObjectIdentifier: TransferToken]>([:])
    private let draining = Atomic<Bool>(false)

    public init(settings: Settings, registry: ProviderRegistry, engine: HTTPEngine, publisher: EventPublisher, logger: Logger) {
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.publisher = publisher
        self.parser = JobParser(maxBytes: settings.maxJobBytes)
        self.logger = logger
    }

    /// Cuts every running transfer; their jobs go back to the queue.
    public func abortAll() {
        draining.store(true, ordering: .relaxed)
        for token in active.withLock({ Array($0.values) }) { engine.abort(token, reason: .drain) }
    }

    public func run(raw: [UInt8], mode: String) async {
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
        let stream = RequestStream(writer: EventWriter(id: job.id), keys: settings.keys, logTTL: settings.logTTL)
        let writer = stream.writer
        let attempt = job.attempts + 1

        if let d = job.deadline, Clock.unixTime() > d {
            writer.error(LLMQError(.expired, "the job's deadline \(d) passed before a worker picked it up"), attempt: attempt)
            await finish(job, stream, status: "error", error: LLMQError(.expired, "deadline passed"), attempt: attempt, provider: nil, model: nil)
            return
        }
        let targets: [ProviderRegistry.Target]
        do {
            targets = try registry.resolve(job.model)
        } catch {
            writer.error(error, attempt: attempt)
            await finish(job, stream, status: "error", error: error, attempt: attempt, provider: nil, model: nil, deadLetter: true)
            return
        }
        let budgetEnd = job.timeoutS.map { t0 + UInt64($0 * 1e9) }
        var lastError = LLMQError(.internal, "no target was tried")
        var last: ProviderRegistry.Target?
        for target in targets {
            last = target
            if draining.load(ordering: .relaxed) {
                await requeue(job, stream, attempt: attempt, mode: mode)
                return
            }
            var remaining: Double?
            if let budgetEnd {
                let now = Clock.nowNanos()
                guard now < budgetEnd else {
                    lastError = LLMQError(.timeout, "the job's timeout_s of \(job.timeoutS!) s ran out", retryable: true)
                    break
                }
                remaining = Double(budgetEnd - now) / 1e9
            }
            let provider = target.provider
            writer.beginAttempt(attempt: attempt, worker: settings.worker, provider: provider.name, model: target.model, metadata: job.metadata)
            let request: HTTPRequest
            do {
                request = try provider.makeRequest(job: job, model: target.model, timeout: remaining)
            } catch {
                lastError = error
                continue
            }
            let decoder = provider.makeDecoder(job: job, writer: writer)
            let token = TransferToken()
            active.withLock { $0[ObjectIdentifier(token)] = token }
            if draining.load(ordering: .relaxed) { engine.abort(token, reason: .drain) }
            let result = await engine.perform(request, decoder: decoder, output: stream, token: token)
            active.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(token)) }

            if result.completed && result.isHTTPSuccess && decoder.failure == nil && decoder.complete {
                let outcome = Outcome(
                    finishReason: decoder.finishReason ?? "stop", usage: decoder.usage,
                    ttftMs: writer.firstOutputAt.map { Clock.millis(since: t0, to: $0) },
                    durationMs: Clock.millis(since: t0), metadata: job.metadata)
                writer.done(outcome)
                await finish(job, stream, status: "done", outcome: outcome, attempt: attempt, provider: provider.name, model: target.model)
                return
            }
            if result.aborted == .drain {
                await requeue(job, stream, attempt: attempt, mode: mode)
                return
            }
            lastError = decoder.failure ?? provider.error(for: result)
            if budgetEnd != nil && result.curlCode == 28 && (remaining ?? .infinity) < provider.config.timeoutS {
                lastError = LLMQError(.timeout, "the job's timeout_s of \(job.timeoutS!) s ran out", retryable: true)
            }
            log.warning("upstream attempt failed", metadata: [
                "provider": "\(provider.name)", "model": "\(target.model)", "attempt": "\(attempt)",
                "code": "\(lastError.code)", "error": "\(lastError.message)",
            ])
            if writer.outputSent || !Self.fallsBack(lastError) { break }
        }
        writer.error(lastError, attempt: attempt)
        await finish(job, stream, status: "error", error: lastError, attempt: attempt, provider: last?.provider.name, model: last?.model)
    }

    /// Whether an error before any output moves on to the route's next target.
    static func fallsBack(_ e: LLMQError) -> Bool {
        switch e.code {
        case .badRequest, .cancelled, .expired, .invalidJob: false
        default: true
        }
    }

    // MARK: endings

    private func finish(_ job: Job, _ stream: RequestStream, status: String, outcome: Outcome? = nil, error: LLMQError? = nil,
                        attempt: Int, provider: String?, model: String?, deadLetter: Bool = false) async {
        let w = stream.writer
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
        let resultBytes = JSONValue.object(result).jsonBytes
        let dead = deadLetter ? deadEntry(raw: job.raw, id: job.id, error: error!, attempt: attempt) : nil
        let keys = settings.keys
        await publisher.send { buf in
            var n = stream.drain(into: &buf)
            RESP.appendCommand(["SET", keys.result(job.id)], last: resultBytes, to: &buf)
            n += 1
            if let dead {
                RESP.appendCommand(["LPUSH", keys.dead(job.mode)], last: dead, to: &buf)
                n += 1
            }
            RESP.appendCommand(["EXPIRE", keys.result(job.id), String(settings.resultTTL)], to: &buf)
            RESP.appendCommand(["LREM", keys.inflight(job.mode, worker: settings.worker), "1"], last: job.raw, to: &buf)
            return n + 2
        }
    }

    private func reject(raw: [UInt8], mode: String, rejection: JobRejection) async {
        logger.warning("rejected a job", metadata: [
            "request_id": "\(rejection.id ?? "-")", "mode": "\(mode)", "error": "\(rejection.error.message)",
        ])
        let dead = deadEntry(raw: raw, id: rejection.id, error: rejection.error, attempt: 1)
        let keys = settings.keys
        var stream: RequestStream?
        var resultBytes: [UInt8] = []
        if let id = rejection.id {
            let s = RequestStream(writer: EventWriter(id: id), keys: keys, logTTL: settings.logTTL)
            s.writer.error(rejection.error, attempt: 1)
            stream = s
            resultBytes = JSONValue.object([
                "id": .string(id), "status": "error", "attempt": 1, "worker": .string(settings.worker),
                "error": ["code": .string(rejection.error.code.rawValue), "message": .string(rejection.error.message), "retryable": false],
            ]).jsonBytes
        }
        await publisher.send { buf in
            var n = 0
            if let stream, let id = rejection.id {
                n += stream.drain(into: &buf)
                RESP.appendCommand(["SET", keys.result(id)], last: resultBytes, to: &buf)
                RESP.appendCommand(["EXPIRE", keys.result(id), String(settings.resultTTL)], to: &buf)
                n += 2
            }
            RESP.appendCommand(["LPUSH", keys.dead(mode)], last: dead, to: &buf)
            RESP.appendCommand(["LREM", keys.inflight(mode, worker: settings.worker), "1"], last: raw, to: &buf)
            return n + 2
        }
    }

    /// Puts a job back at the head of its queue. When output had gone out the
    /// attempt counts, and subscribers hear `retry`; otherwise it goes back unchanged.
    private func requeue(_ job: Job, _ stream: RequestStream, attempt: Int, mode: String) async {
        let writer = stream.writer
        var newRaw = job.raw
        if writer.outputSent || writer.started {
            writer.retry(nextAttempt: attempt + 1, reason: "worker_drained")
            if case .object(var o)? = try? JSONValue.parse(job.raw) {
                o["attempts"] = .int(attempt)
                newRaw = JSONValue.object(o).jsonBytes
            }
        }
        logger.info("put a job back on its queue", metadata: ["request_id": "\(job.id)", "attempt": "\(attempt)"])
        let keys = settings.keys
        await publisher.send { buf in
            let n = stream.drain(into: &buf)
            RESP.appendCommand(["MULTI"], to: &buf)
            RESP.appendCommand(["LREM", keys.inflight(mode, worker: settings.worker), "1"], last: job.raw, to: &buf)
            RESP.appendCommand(["RPUSH", keys.queue(mode)], last: newRaw, to: &buf)
            RESP.appendCommand(["EXEC"], to: &buf)
            return n + 4
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
