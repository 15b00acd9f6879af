import CoreMetrics

/// Every metric llmq emits, through the swift-metrics API; the executable
/// chooses the backend (Prometheus). Names follow Prometheus conventions.
public enum FarmMetrics {
    public static func requestFinished(mode: Mode, provider: String, model: String, outcome: String,
                                       seconds: Double, ttft: Double?, promptTokens: Int?, completionTokens: Int?) {
        let h = RequestHandles.cache[.init(mode: mode, provider: provider, model: model, outcome: outcome)]
        h.requests.increment()
        h.duration.recordNanoseconds(Int64(seconds * 1e9))
        if let ttft { h.ttft.recordNanoseconds(Int64(ttft * 1e9)) }
        if let p = promptTokens, p > 0 { h.tokensIn.increment(by: p) }
        if let c = completionTokens, c > 0 { h.tokensOut.increment(by: c) }
    }

    /// A job's first request reached the HTTP engine's libcurl, `seconds` after the job left Redis.
    public static func dispatched(mode: Mode, seconds: Double) {
        DispatchHandles.cache[mode].recordNanoseconds(Int64(seconds * 1e9))
    }

    public static func retry(mode: Mode, reason: String) {
        Counter(label: "llmq_retries_total", dimensions: [("mode", mode.rawValue), ("reason", reason)]).increment()
    }

    public static func fallback(mode: Mode, provider: String) {
        Counter(label: "llmq_fallbacks_total", dimensions: [("mode", mode.rawValue), ("provider", provider)]).increment()
    }

    public static func cancelled(mode: Mode) {
        Counter(label: "llmq_cancellations_total", dimensions: [("mode", mode.rawValue)]).increment()
    }

    public static func deadLettered(mode: Mode, code: String) {
        Counter(label: "llmq_dead_lettered_total", dimensions: [("mode", mode.rawValue), ("code", code)]).increment()
    }

    public static func requeued(mode: Mode, reason: String) {
        Counter(label: "llmq_requeued_total", dimensions: [("mode", mode.rawValue), ("reason", reason)]).increment()
    }

    public static func redisReconnect(component: String) {
        Counter(label: "llmq_redis_reconnects_total", dimensions: [("component", component)]).increment()
    }

    public static func workerRestart(slot: Int) {
        Counter(label: "llmq_worker_restarts_total", dimensions: [("slot", String(slot))]).increment()
    }

    public static func providerCooldown(provider: String) {
        Counter(label: "llmq_provider_cooldowns_total", dimensions: [("provider", provider)]).increment()
    }

    public static func providerCoolingDown(provider: String, active: Bool) {
        Gauge(label: "llmq_provider_cooldown_active", dimensions: [("provider", provider)]).record(active ? 1 : 0)
    }

    /// Jobs this worker holds and permits it has free, per mode.
    public static func permits(mode: Mode, inUse: Int, capacity: Int) {
        let h = PermitHandles.cache[mode]
        h.inUse.record(inUse)
        h.free.record(capacity - inUse)
    }

    /// Pending and in-flight jobs of a mode across the farm, as seen in Redis.
    public static func queue(mode: Mode, pending: Int, inflight: Int) {
        Gauge(label: "llmq_queue_pending_jobs", dimensions: [("mode", mode.rawValue)]).record(pending)
        Gauge(label: "llmq_queue_inflight_jobs", dimensions: [("mode", mode.rawValue)]).record(inflight)
        Gauge(label: "llmq_queue_depth_jobs", dimensions: [("mode", mode.rawValue)]).record(pending + inflight)
    }
}
