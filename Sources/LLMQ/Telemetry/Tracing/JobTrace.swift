import Tracing

/// The spans of one job, through whichever tracer the executable bootstrapped:
///
/// - `llmq.job` (consumer), child of the producer's `traceparent` when the job
///   has one: from pick-up (or from `metadata.enqueued_at`, when the producer
///   put a Unix time there) to the terminal event; attributes name the request,
///   mode, worker, attempt, provider, model, token usage and outcome, and the
///   event `first_token` marks the first output subscribers saw.
/// - `llmq.queue_wait` (internal), only with `metadata.enqueued_at`: queued to picked up.
/// - `llmq.provider` (client), one per upstream call, with the HTTP status and
///   its own `first_token` event.
///
/// Without a tracer (tracing off) `JobTrace.start` returns nil, and the runner's
/// optional calls do nothing: no span, no allocation, no clock read.
///
/// Thread rules: used by the task that runs the job.
public final class JobTrace: @unchecked Sendable {  // used by one task at a time, as the job's RequestStream
    let job: any Span
    let pickedUp: UInt64

    /// Starts the job's span; nil when no tracer is bootstrapped.
    public static func start(job: Job, worker: String, pickedUp: UInt64) -> JobTrace? {
        let tracer = InstrumentationSystem.tracer
        if tracer is NoOpTracer { return nil }
        return JobTrace(tracer: tracer, job: job, worker: worker, pickedUp: pickedUp)
    }

    init(tracer: any Tracer, job: Job, worker: String, pickedUp: UInt64) {
        self.pickedUp = pickedUp
        var context = InstrumentationContext.topLevel
        if let tp = job.traceparent {
            InstrumentationSystem.instrument.extract(["traceparent": tp], into: &context, using: TraceparentExtractor())
        }
        let picked = WallInstant(monotonic: pickedUp)
        var start = picked
        var enqueued: WallInstant?
        // metadata is the producer's free-form JSON: a time that is not finite or
        // beyond 1e10 s (year 2286) would overflow the nanosecond clock, so it is ignored.
        if let at = job.metadata?["enqueued_at"]?.doubleValue, at.isFinite, at > 0, at < 1e10 {
            let e = WallInstant(nanosecondsSinceEpoch: UInt64(at * 1e9))
            if e < picked {
                enqueued = e
                start = e
            }
        }
        let span = tracer.startSpan("llmq.job", context: context, ofKind: .consumer, at: start)
        span.updateAttributes { a in
            a["llmq.request_id"] = job.id
            a["llmq.mode"] = job.mode.rawValue
            a["llmq.worker"] = worker
            a["llmq.route"] = job.model
            a["messaging.system"] = "redis"
            a["messaging.operation.type"] = "process"
            if let enqueued {
                a["llmq.queue_wait_s"] = Double(picked.nanosecondsSinceEpoch - enqueued.nanosecondsSinceEpoch) / 1e9
            }
        }
        if let enqueued {
            let wait = tracer.startSpan("llmq.queue_wait", context: span.context, ofKind: .internal, at: enqueued)
            wait.end(at: picked)
        }
        self.job = span
    }

    /// The trace context to send upstream, so a provider that traces joins this trace.
    public var traceparent: String? { job.context.traceContext?.traceparent }

    /// An upstream call's span and when it started (monotonic).
    public struct ProviderCall: Sendable {
        let span: any Span
        let started: UInt64
    }

    /// Starts the span of one upstream call.
    public func providerCall(provider: String, model: String, attempt: Int) -> ProviderCall {
        let span = InstrumentationSystem.tracer.startSpan("llmq.provider", context: job.context, ofKind: .client)
        span.updateAttributes { a in
            a["gen_ai.system"] = provider
            a["gen_ai.request.model"] = model
            a["llmq.attempt"] = attempt
        }
        return ProviderCall(span: span, started: Clock.nowNanos())
    }

    /// Ends an upstream call's span: its HTTP status, whether it succeeded, and the
    /// `first_token` event when the job's first output went out during this call.
    public func endProviderCall(_ call: ProviderCall?, result: HTTPResult, decoderFailure: LLMQError?, complete: Bool, firstOutputAt: UInt64?) {
        guard let call else { return }
        let span = call.span
        if result.status > 0 { span.attributes["http.response.status_code"] = result.status }
        if let f = firstOutputAt, f >= call.started {
            span.addEvent(SpanEvent(name: "first_token", at: WallInstant(monotonic: f)))
        }
        if !(result.completed && result.isHTTPSuccess && decoderFailure == nil && complete) {
            let failure = decoderFailure?.code.rawValue ?? result.aborted.map { "aborted_\($0)" }
                ?? (result.transportFailure.map { "transport_\($0)" } ?? "http_\(result.status)")
            span.attributes["error.type"] = failure
            span.setStatus(SpanStatus(code: .error, message: failure))
        }
        span.end()
    }

    /// Ends the job's span with its outcome: `done`, an error code, or `requeued`.
    public func finish(outcome: String, attempt: Int, provider: String?, model: String?, firstOutputAt: UInt64?,
                       promptTokens: Int? = nil, completionTokens: Int? = nil, message: String? = nil) {
        job.updateAttributes { a in
            a["llmq.outcome"] = outcome
            a["llmq.attempt"] = attempt
            if let provider { a["gen_ai.system"] = provider }
            if let model { a["gen_ai.request.model"] = model }
            if let p = promptTokens { a["gen_ai.usage.input_tokens"] = p }
            if let c = completionTokens { a["gen_ai.usage.output_tokens"] = c }
            if let f = firstOutputAt { a["llmq.ttft_s"] = Double(f &- pickedUp) / 1e9 }
        }
        if let f = firstOutputAt { job.addEvent(SpanEvent(name: "first_token", at: WallInstant(monotonic: f))) }
        if outcome != "done" && outcome != "requeued" {
            job.attributes["error.type"] = outcome
            job.setStatus(SpanStatus(code: .error, message: message))
        }
        job.end()
    }
}
