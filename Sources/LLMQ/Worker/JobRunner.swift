import Foundation
import Logging
import Synchronization

/// Carries out one job's visit to this worker: it parses the job, asks the
/// job's `JobLifecycle` what to do, does it (calls a provider, or ends the
/// visit through the job's `HeldJob`), and feeds back what happened.
///
/// Every write for a job goes through the publisher and is dropped once the
/// lease the job was taken under is gone (see `Lease`).
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
        /// `durability: replica`: a terminal write must reach a replica (WAIT) before the job is acknowledged.
        public var replicaAcknowledged = false
    }

    let settings: Settings
    let registry: ProviderRegistry
    let engine: HTTPEngine
    let publisher: EventPublisher
    let lease: Lease
    let promoter: DelayedJobPromoter?
    let labels: ModelLabels
    let parser: JobParser
    let logger: Logger
    /// Engines the supervisor manages on this host; nil when it manages none.
    let engines: EngineGate?
    private let active = Mutex<[String: JobHandle]>([:])
    /// Cancellations that arrived for ids not (yet) running here, with when they arrived.
    private let recentCancels = Mutex<[String: UInt64]>([:])
    private let draining = Atomic<Bool>(false)

    public init(settings: Settings, registry: ProviderRegistry, engine: HTTPEngine, publisher: EventPublisher, lease: Lease,
                promoter: DelayedJobPromoter?, labels: ModelLabels, logger: Logger, engines: EngineGate? = nil) {
        self.engines = engines
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.publisher = publisher
        self.lease = lease
        self.promoter = promoter
        self.labels = labels
        self.parser = JobParser(maxBytes: settings.maxJobBytes)
        self.logger = logger
    }

    // MARK: interruptions

    /// Cuts every running transfer; their jobs go back to the queue.
    public func abortAll() {
        draining.store(true, ordering: .relaxed)
        for h in active.withLock({ Array($0.values) }) { h.drain() }
    }

    /// Stops every job taken under an epoch older than `epoch`, without a write.
    public func fence(olderThan epoch: UInt64) {
        for h in active.withLock({ Array($0.values) }) where h.epoch < epoch { h.fence() }
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

    private func register(_ id: String, epoch: UInt64) -> JobHandle {
        let h = JobHandle(engine: engine, epoch: epoch)
        active.withLock { $0[id] = h }
        if recentCancels.withLock({ $0.removeValue(forKey: id) }) != nil { h.cancel() }
        if draining.load(ordering: .relaxed) { h.drain() }
        if !lease.holds(epoch) { h.fence() }
        return h
    }

    private func unregister(_ id: String, _ h: JobHandle) {
        active.withLock { if $0[id] === h { $0.removeValue(forKey: id) } }
    }

    // MARK: one visit

    /// Everything one visit needs to carry out actions. A class: every async step of the visit keeps
    /// what it uses in its task's frame, where a reference is 8 bytes and this is about 700.
    final class Visit {
        let job: Job
        let held: HeldJob
        let stream: RequestStream
        let handle: JobHandle
        let targets: [ProviderRegistry.Target]
        let t0: UInt64
        /// When the job was taken, Unix seconds.
        let pickedAt: Double
        let logger: Logger
        var target: ProviderRegistry.Target?
        var outcome: Outcome?
        var lastError: LLMQError?
        /// Whether a request of this visit reached the HTTP engine yet (only the first counts as dispatch).
        var dispatched = false

        init(job: Job, held: HeldJob, stream: RequestStream, handle: JobHandle, targets: [ProviderRegistry.Target], t0: UInt64,
             pickedAt: Double, logger: Logger) {
            self.job = job
            self.held = held
            self.stream = stream
            self.handle = handle
            self.targets = targets
            self.t0 = t0
            self.pickedAt = pickedAt
            self.logger = logger
        }

        /// The worker's logger with this job's id, made only when something is logged
        /// (setting metadata on a stream log handler renders all of it again).
        var log: Logger {
            var l = logger
            l[metadataKey: "request_id"] = "\(job.id)"
            return l
        }
    }

    /// Runs one visit of a job this worker holds; `cancelKey` says whether its cancel key was set when it was fetched.
    ///
    /// A streaming job's task holds the async frames of `run`, `drive`, `call` and the engine's `perform` for as
    /// long as it streams, so each keeps only references across its awaits, and the steps before and after
    /// (`start`, `prepare`, `conclude`, the endings) run in frames of their own that are gone by then.
    public func run(_ held: HeldJob, epoch: UInt64, cancelKey: CancelKeyAnswer = CancelKeyAnswer(false)) async {
        guard let visit = await start(held, epoch: epoch) else { return }
        defer { unregister(visit.job.id, visit.handle) }
        await drive(visit, cancelKey: cancelKey)
    }

    /// Parses and registers the job; nil when the visit ended already (a rejected job, an unknown model).
    @inline(never)
    private func start(_ held: HeldJob, epoch: UInt64) async -> Visit? {
        let t0 = Clock.nowNanos()
        let pickedAt = Clock.unixTime()
        let job: Job
        do {
            job = try parser.parse(held.raw, mode: held.mode)
        } catch {
            await reject(held, rejection: error, epoch: epoch)
            return nil
        }
        let stream = RequestStream(
            writer: EventWriter(id: job.id, maxOutputBytes: settings.maxOutputBytes), keys: settings.keys, logTTL: settings.logTTL,
            fence: (lease, epoch))
        stream.trace = JobTrace.start(job: job, worker: settings.worker, pickedUp: t0)
        let handle = register(job.id, epoch: epoch)
        let targets: [ProviderRegistry.Target]
        do {
            targets = try registry.resolve(job.model)
        } catch {
            let v = Visit(job: job, held: held, stream: stream, handle: handle, targets: [], t0: t0, pickedAt: pickedAt, logger: logger)
            await fail(v, error, attempt: job.attempts + 1, deadLetter: true)
            unregister(job.id, handle)
            return nil
        }
        return Visit(job: job, held: held, stream: stream, handle: handle, targets: targets, t0: t0, pickedAt: pickedAt, logger: logger)
    }

    /// Takes the visit through its lifecycle: calls, and the ending the lifecycle decides.
    @inline(never)
    private func drive(_ visit: Visit, cancelKey: CancelKeyAnswer) async {
        let handle = visit.handle
        let targets = visit.targets
        let pickedAt = visit.pickedAt
        var machine = JobLifecycle(.init(
            attemptsSpent: visit.job.attempts, maxAttempts: visit.job.maxAttempts ?? settings.maxAttempts, targets: targets.count,
            deadline: visit.job.deadline, notBefore: visit.job.notBefore, budgetEnd: visit.job.timeoutS.map { pickedAt + $0 },
            retryBase: settings.retryBase, retryCap: settings.retryCap))
        if await cancelKey.isSet { handle.cancel() }
        var action = machine.handle(.picked(now: pickedAt, cancelRequested: handle.isCancelled, cooling: await cooling(targets)))
        while true {
            if handle.isFenced { action = machine.handle(.leaseLost) }
            switch action {
            case .call(let index, let attempt):
                if handle.isCancelled {
                    action = machine.handle(.cancelled)
                    continue
                }
                if handle.isDrained {
                    action = machine.handle(.drained(outputSent: visit.stream.writer.outputSent))
                    continue
                }
                let target = targets[index]
                if let previous = visit.target, visit.lastError != nil, previous.provider.name != target.provider.name || previous.model != target.model {
                    FarmMetrics.fallback(mode: visit.job.mode, provider: previous.provider.name)
                }
                visit.target = target
                let call = await self.call(visit, target: target, attempt: attempt, budgetEnd: visit.job.timeoutS.map { pickedAt + $0 })
                switch call {
                case .succeeded(let outcome):
                    visit.outcome = outcome
                    action = machine.handle(.callEnded(.succeeded, now: Clock.unixTime(), cooling: [], jitter: 0))
                case .failed(let error):
                    visit.lastError = error
                    action = machine.handle(.callEnded(
                        .failed(error, outputSent: visit.stream.writer.outputSent), now: Clock.unixTime(), cooling: await cooling(targets),
                        jitter: Double.random(in: 0...1)))
                case .interrupted:
                    if handle.isFenced {
                        action = machine.handle(.leaseLost)
                    } else if handle.isCancelled {
                        action = machine.handle(.cancelled)
                    } else {
                        action = machine.handle(.drained(outputSent: visit.stream.writer.outputSent))
                    }
                }
            case .wait(let wait):
                await delay(visit, wait)
                return
            case .requeue(let spent, let timeoutLeft, let announce):
                await requeue(visit, attemptsSpent: spent, timeoutLeft: timeoutLeft, announce: announce)
                return
            case .finish(let attempt):
                await finish(visit, attempt: attempt)
                return
            case .fail(let error, let attempt, let deadLetter):
                await fail(visit, error, attempt: attempt, deadLetter: deadLetter)
                return
            case .abandon:
                visit.stream.trace?.finish(outcome: "fenced", attempt: machine.attempt, provider: nil, model: nil, firstOutputAt: nil)
                visit.log.warning("stopped a job without a write: this worker's lease lapsed, so the job is another's to recover")
                return
            case .none:
                return
            }
        }
    }

    /// Seconds each target still cools down (or its local engine still starts), nil where it may be called.
    private func cooling(_ targets: [ProviderRegistry.Target]) async -> [Double?] {
        var out: [Double?] = []
        for t in targets { out.append(await registry.cooldowns.remaining(t.provider.name) ?? engines?.waitSeconds(t.provider.name)) }
        return out
    }

    enum CallResult {
        case succeeded(Outcome)
        case failed(LLMQError)
        case interrupted
    }

    /// What one call to one target holds while its transfer runs. A class, so the task of a streaming job
    /// keeps a reference in its async frame rather than every value the call needs before and after.
    final class Attempt {
        let target: ProviderRegistry.Target
        let number: Int
        let remaining: Double?
        let request: HTTPRequest
        let decoder: ResponseDecoder
        /// Embed jobs with a cache: the inputs Redis did not hold, and the writer their vectors go to first.
        let batch: EmbeddingBatch?
        let scratch: EventWriter?
        let token = TransferToken()
        var span: JobTrace.ProviderCall?

        init(target: ProviderRegistry.Target, number: Int, remaining: Double?, request: HTTPRequest, decoder: ResponseDecoder,
             batch: EmbeddingBatch?, scratch: EventWriter?) {
            self.target = target
            self.number = number
            self.remaining = remaining
            self.request = request
            self.decoder = decoder
            self.batch = batch
            self.scratch = scratch
        }
    }

    enum Prepared {
        case ready(Attempt)
        case ended(CallResult)
    }

    /// One call to one target. Its frame stays small on purpose (it lives as long as the stream):
    /// `prepare` and `conclude` do the work before and after the transfer.
    private func call(_ v: Visit, target: ProviderRegistry.Target, attempt: Int, budgetEnd: Double?) async -> CallResult {
        let name = target.provider.name
        if let engines {
            if let down = engines.unavailable(name) { return .failed(down) }
            engines.noteUse(name)
        }
        defer { engines?.noteUse(name) }
        let a: Attempt
        switch await prepare(v, target: target, attempt: attempt, budgetEnd: budgetEnd) {
        case .ready(let ready): a = ready
        case .ended(let result): return result
        }
        let permit = await registry.limiter.acquire(name)  // max_concurrency per provider
        defer { if permit { registry.limiter.release(name) } }
        guard v.handle.begin(a.token) else { return .interrupted }
        a.span = v.stream.trace?.providerCall(provider: name, model: target.model, attempt: attempt)
        var admitted: (@Sendable (UInt64) -> Void)?
        if !v.dispatched, let fetched = v.held.fetchedAt {
            let mode = v.job.mode
            admitted = { at in FarmMetrics.dispatched(mode: mode, seconds: Double(at &- fetched) / 1e9) }
        }
        v.dispatched = true
        let result = await engine.perform(a.request, decoder: a.decoder, output: v.stream, token: a.token, admitted: admitted)
        v.handle.end()
        return await conclude(v, a, result)
    }

    /// Everything before the transfer: the budget, the start line, the embedding cache, the request.
    /// Only the cache look-up waits, in a frame of its own: a task keeps its deepest frames' memory while it
    /// streams, so the synchronous work runs on the thread's stack (this frame was 4 KB a stream).
    @inline(never)
    private func prepare(_ v: Visit, target: ProviderRegistry.Target, attempt: Int, budgetEnd: Double?) async -> Prepared {
        let remaining: Double?
        do {
            remaining = try begin(v, target: target, attempt: attempt, budgetEnd: budgetEnd)
        } catch {
            return .ended(.failed(error))
        }
        if v.job.mode == .embed, v.job.params.cache, let scope = registry.embedCache.scope(route: v.job.model, provider: target.provider.name) {
            return await prepareCached(v, target: target, attempt: attempt, remaining: remaining, scope: scope)
        }
        return request(v, target: target, attempt: attempt, remaining: remaining, batch: nil)
    }

    /// Checks the job's budget and writes the attempt's start line; returns the seconds left, if limited.
    @inline(never)
    private func begin(_ v: Visit, target: ProviderRegistry.Target, attempt: Int, budgetEnd: Double?) throws(LLMQError) -> Double? {
        var remaining: Double?
        if let budgetEnd {
            remaining = budgetEnd - Clock.unixTime()
            guard remaining! > 0 else { throw LLMQError(.timeout, "the job's timeout_s of \(v.job.timeoutS!) s ran out") }
        }
        v.stream.writer.beginAttempt(attempt: attempt, worker: settings.worker, provider: target.provider.name, model: target.model,
                                     metadata: v.job.metadata)
        return remaining
    }

    /// Embed jobs of a cached route or provider send only the inputs Redis does not hold; the decoder then writes
    /// into a scratch writer and `EmbeddingBatch.finish` answers every input in order.
    @inline(never)
    private func prepareCached(_ v: Visit, target: ProviderRegistry.Target, attempt: Int, remaining: Double?,
                               scope: EmbeddingCache.Scope) async -> Prepared {
        let writer = v.stream.writer
        let batch = await EmbeddingBatch.lookUp(v.job, provider: target.provider.endpoint, model: target.model, scope: scope, cache: registry.embedCache)
        if let batch, batch.misses.isEmpty {
            _ = await batch.finish(scratch: nil, into: writer)
            return .ended(.succeeded(Outcome(
                finishReason: "stop", usage: Usage(promptTokens: 0, completionTokens: 0),
                ttftMs: writer.firstOutputAt.map { Clock.millis(since: v.t0, to: $0) }, durationMs: Clock.millis(since: v.t0),
                metadata: v.job.metadata)))
        }
        return request(v, target: target, attempt: attempt, remaining: remaining, batch: batch)
    }

    /// The attempt's request and decoder.
    @inline(never)
    private func request(_ v: Visit, target: ProviderRegistry.Target, attempt: Int, remaining: Double?, batch: EmbeddingBatch?) -> Prepared {
        let provider = target.provider
        let job = batch?.upstreamJob(v.job) ?? v.job
        let scratch = batch.map { _ in EventWriter(id: v.job.id) }
        let request: HTTPRequest
        do {
            request = try provider.makeRequest(job: job, model: target.model, timeout: remaining)
        } catch {
            return .ended(.failed(error))
        }
        return .ready(Attempt(
            target: target, number: attempt, remaining: remaining, request: request,
            decoder: provider.makeDecoder(job: job, writer: scratch ?? v.stream.writer), batch: batch, scratch: scratch))
    }

    /// Everything after the transfer: what its result means for the job and the provider.
    @inline(never)
    private func conclude(_ v: Visit, _ a: Attempt, _ result: HTTPResult) async -> CallResult {
        let writer = v.stream.writer
        let provider = a.target.provider
        let decoder = a.decoder
        v.stream.trace?.endProviderCall(a.span, result: result, decoderFailure: decoder.failure, complete: decoder.complete, firstOutputAt: writer.firstOutputAt)

        if result.completed && result.isHTTPSuccess && decoder.failure == nil && decoder.complete {
            registry.cooldowns.record(provider.name, error: nil)
            if let batch = a.batch, let failure = await batch.finish(scratch: a.scratch, into: writer) { return .failed(failure) }
            return .succeeded(Outcome(
                finishReason: decoder.finishReason ?? "stop", usage: decoder.usage,
                ttftMs: writer.firstOutputAt.map { Clock.millis(since: v.t0, to: $0) },
                durationMs: Clock.millis(since: v.t0), metadata: v.job.metadata))
        }
        switch result.aborted {
        case .drain?, .cancelled?: return .interrupted
        default: break
        }
        var error = decoder.failure ?? provider.error(for: result)
        if let remaining = a.remaining, result.transportFailure == .timedOut, remaining < provider.config.timeoutS {
            error = LLMQError(.timeout, "the job's timeout_s of \(v.job.timeoutS!) s ran out", retryable: false)
        }
        // Running out of descriptors here says nothing about the provider's health.
        if result.transportFailure != .localResource { registry.cooldowns.record(provider.name, error: error) }
        v.log.warning("upstream call failed", metadata: [
            "provider": "\(provider.name)", "model": "\(registry.redact(a.target.model))", "attempt": "\(a.number)",
            "code": "\(error.code)", "error": "\(registry.redact(error.message))",
        ])
        return .failed(error)
    }

    // MARK: endings

    private func finish(_ v: Visit, attempt: Int) async {
        guard let outcome = v.outcome, let target = v.target else { return }
        let w = v.stream.writer
        w.done(outcome)
        v.stream.trace?.finish(
            outcome: "done", attempt: attempt, provider: target.provider.name, model: target.model, firstOutputAt: w.firstOutputAt,
            promptTokens: outcome.usage.promptTokens, completionTokens: outcome.usage.completionTokens, message: nil)
        let result = ResultRecord(
            id: v.job.id, worker: settings.worker, attempt: attempt, metadata: v.job.metadata, writer: w, provider: target.provider.name,
            model: target.model, outcome: outcome)
        await settle(v.handle.epoch, v.log, { v.stream.drainTerminal(into: &$0, result: result.json, resultTTL: self.settings.resultTTL, runToken: result.run) },
                     then: { v.held.acknowledge(into: &$0) }, terminal: true)
        FarmMetrics.requestFinished(
            mode: v.job.mode, provider: target.provider.name, model: labels.label(provider: target.provider.name, model: target.model),
            outcome: "done", seconds: outcome.durationMs / 1000, ttft: outcome.ttftMs.map { $0 / 1000 },
            promptTokens: outcome.usage.promptTokens, completionTokens: outcome.usage.completionTokens)
    }

    private func fail(_ v: Visit, _ error: LLMQError, attempt: Int, deadLetter: Bool) async {
        var error = error
        error.message = registry.redact(error.message)
        let w = v.stream.writer
        w.error(error, attempt: attempt)
        v.stream.trace?.finish(
            outcome: error.code.rawValue, attempt: attempt, provider: v.target?.provider.name, model: v.target?.model,
            firstOutputAt: w.firstOutputAt, promptTokens: nil, completionTokens: nil, message: error.message)
        let result = ResultRecord(
            id: v.job.id, worker: settings.worker, attempt: attempt, metadata: v.job.metadata, writer: w, provider: v.target?.provider.name,
            model: v.target?.model, error: error)
        let dead = deadLetter
            ? DeadLetter.entry(raw: v.held.raw, id: v.job.id, error: error, attempt: attempt, worker: settings.worker, now: Clock.unixTime())
            : nil
        await settle(v.handle.epoch, v.log,
                     { v.stream.drainTerminal(into: &$0, result: result.json, resultTTL: self.settings.resultTTL, runToken: result.run) },
                     then: { v.held.leave(dead: dead, into: &$0) }, terminal: true)
        if error.code == .cancelled { FarmMetrics.cancelled(mode: v.job.mode) }
        if deadLetter { FarmMetrics.deadLettered(mode: v.job.mode, code: error.code.rawValue) }
        let provider = v.target?.provider.name ?? "none"
        FarmMetrics.requestFinished(
            mode: v.job.mode, provider: provider, model: v.target.map { labels.label(provider: provider, model: $0.model) } ?? "none",
            outcome: error.code.rawValue, seconds: Clock.millis(since: v.t0) / 1000, ttft: nil, promptTokens: nil, completionTokens: nil)
    }

    /// The job leaves this worker to wait in its mode's delayed set.
    private func delay(_ v: Visit, _ wait: JobLifecycle.Wait) async {
        let now = Clock.unixTime()
        let seconds = max(0, wait.until - now)
        let reason = v.lastError?.code.rawValue ?? wait.reason.rawValue
        if let next = wait.announce { v.stream.writer.retry(nextAttempt: next, reason: reason, retryIn: seconds) }
        let rewritten = HeldJob.rewrite(
            v.held.raw, attempts: wait.attemptsSpent != v.job.attempts ? wait.attemptsSpent : nil, timeoutLeft: wait.timeoutLeft)
        v.stream.trace?.finish(outcome: "delayed", attempt: wait.attemptsSpent, provider: nil, model: nil, firstOutputAt: v.stream.writer.firstOutputAt)
        await settle(v.handle.epoch, v.log, { v.stream.drain(into: &$0) }, then: {
            v.held.delay(as: rewritten, seconds: wait.reason == .notBefore ? 0 : seconds,
                         notBefore: wait.reason == .notBefore ? wait.until : nil, into: &$0)
        })
        promoter?.nudge(dueIn: seconds)
        FarmMetrics.delayed(mode: v.job.mode, reason: wait.reason.rawValue)
        if wait.reason == .retry { FarmMetrics.retry(mode: v.job.mode, reason: reason) }
        v.log.info("waiting in the delayed set", metadata: [
            "reason": "\(wait.reason.rawValue)", "delay_s": "\(String(format: "%.2f", seconds))", "attempts": "\(wait.attemptsSpent)",
        ])
    }

    /// Puts the job back at the head of its queue (a drain).
    private func requeue(_ v: Visit, attemptsSpent: Int, timeoutLeft: Double?, announce: Int?) async {
        if let next = announce { v.stream.writer.retry(nextAttempt: next, reason: "worker_drained", retryIn: nil) }
        let rewritten = HeldJob.rewrite(v.held.raw, attempts: attemptsSpent != v.job.attempts ? attemptsSpent : nil, timeoutLeft: timeoutLeft)
        FarmMetrics.requeued(mode: v.job.mode, reason: "drain")
        v.stream.trace?.finish(outcome: "requeued", attempt: attemptsSpent, provider: nil, model: nil, firstOutputAt: v.stream.writer.firstOutputAt)
        v.log.info("put a job back on its queue", metadata: ["attempts": "\(attemptsSpent)"])
        await settle(v.handle.epoch, v.log, { v.stream.drain(into: &$0) }, then: { v.held.requeue(as: rewritten, into: &$0) })
    }

    /// A job that cannot be parsed: answered when its id can be read, and buried.
    private func reject(_ held: HeldJob, rejection: JobRejection, epoch: UInt64) async {
        FarmMetrics.deadLettered(mode: held.mode, code: rejection.error.code.rawValue)
        logger.warning("rejected a job", metadata: [
            "request_id": "\(rejection.id ?? "-")", "mode": "\(held.mode)", "error": "\(rejection.error.message)",
        ])
        let attempt = 1
        let dead = DeadLetter.entry(raw: held.raw, id: rejection.id, error: rejection.error, attempt: attempt, worker: settings.worker,
                                    now: Clock.unixTime())
        guard let id = rejection.id else {
            await settle(epoch, logger, { _ in 0 }, then: { held.bury(dead, into: &$0) })
            return
        }
        let stream = RequestStream(writer: EventWriter(id: id), keys: settings.keys, logTTL: settings.logTTL, fence: (lease, epoch))
        stream.writer.error(rejection.error, attempt: attempt)
        let result = ResultRecord(id: id, worker: settings.worker, attempt: attempt, metadata: nil, writer: nil, provider: nil, model: nil,
                                  error: rejection.error)
        await settle(epoch, logger, { stream.drainTerminal(into: &$0, result: result.json, resultTTL: self.settings.resultTTL, runToken: result.run) },
                     then: { held.bury(dead, into: &$0) }, terminal: true)
    }

    /// Ends a visit: writes `first` (the job's last lines, its terminal write), then, once Redis
    /// accepted all of it, `then` (the move out of the in-flight list). A refused part is sent again,
    /// the same bytes, with a backoff; the move never goes without what precedes it. Nothing is
    /// written once the lease the job was taken under is gone.
    ///
    /// With `durability: replica`, a `terminal` write is followed by a WAIT for one replica on the
    /// same connection, and the move waits until a replica confirmed it: a failover can then lose the
    /// acknowledgement but not the terminal write before it. While no replica confirms, the batch and
    /// its WAIT are sent again (the terminal write's run token makes the repeat a no-op, or writes it
    /// to a new master that lacks it) and the job keeps its permit: a master without a replica stops
    /// the farm from finishing jobs rather than acknowledge jobs a failover could take back.
    private func settle(_ epoch: UInt64, _ log: @autoclosure () -> Logger, _ first: (inout [UInt8]) -> Int, then move: (inout [UInt8]) -> Int,
                        terminal: Bool = false) async {
        var a: [UInt8] = []
        let na = first(&a)
        var b: [UInt8] = []
        let nb = move(&b)
        var backoff = 0.1
        let durable = terminal && settings.replicaAcknowledged
        for (step, (bytes, n)) in [(a, na), (b, nb)].enumerated() where n > 0 {
            var tries = 0
            while true {
                guard lease.holds(epoch) else { return }
                let body = { (buf: inout [UInt8]) -> Int in
                    buf.append(contentsOf: bytes)
                    return n
                }
                if durable && step == 0 {
                    if await publisher.send(body, replicas: 1, timeoutMs: Self.replicaWaitMs) { break }
                } else if await publisher.send(body) {
                    break
                }
                tries += 1
                if publisher.isAbandoned { return }
                if durable && step == 0 && tries == 1 {
                    log().warning("no replica confirmed a terminal write yet; the job stays in flight until one does")
                }
                guard tries < (durable && step == 0 ? 200 : 10) else {
                    log().error("Redis keeps refusing a job's last writes; it stays in flight and is recovered when this worker restarts")
                    return
                }
                try? await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, 3)
            }
        }
    }

    /// How long one WAIT for a replica may block the publisher (and so every stream of this worker).
    static let replicaWaitMs = 1000
}
