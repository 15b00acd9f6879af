import CoreMetrics

/// The metrics of the operations side: what the queue sampler sees in Redis,
/// readiness, and tracing's own health. Listed with the rest in `MetricCatalog`.
extension FarmMetrics {
    public static func queueOldestAge(mode: Mode, seconds: Double) {
        Gauge(label: "llmq_queue_oldest_age_seconds", dimensions: [("mode", mode.rawValue)]).record(seconds)
    }

    /// Jobs of a mode in the delayed set, and how many of them have been due for a while.
    public static func delayed(mode: Mode, count: Int, overdue: Int) {
        Gauge(label: "llmq_queue_delayed_jobs", dimensions: [("mode", mode.rawValue)]).record(count)
        Gauge(label: "llmq_queue_delayed_overdue_jobs", dimensions: [("mode", mode.rawValue)]).record(overdue)
    }

    public static func deadLetters(mode: Mode, count: Int) {
        Gauge(label: "llmq_dead_letter_jobs", dimensions: [("mode", mode.rawValue)]).record(count)
    }

    public static func liveWorkers(_ n: Int) {
        Gauge(label: "llmq_workers_live").record(n)
    }

    public static func ready(_ ready: Bool) {
        Gauge(label: "llmq_ready").record(ready ? 1 : 0)
    }

    /// Registers each slot's restart counter at 0, so it reads 0 rather than missing before the first restart.
    public static func primeWorkerRestarts(slots: Int) {
        for slot in 0..<slots { _ = Counter(label: "llmq_worker_restarts_total", dimensions: [("slot", String(slot))]) }
    }

    /// Registers a worker's per-mode series at 0 before its first job.
    public static func primeWorker(modes: [Mode: Int]) {
        for (mode, capacity) in modes {
            permits(mode: mode, inUse: 0, capacity: capacity)
            _ = Counter(label: "llmq_cancellations_total", dimensions: [("mode", mode.rawValue)])
            _ = Counter(label: "llmq_requeued_total", dimensions: [("mode", mode.rawValue), ("reason", "drain")])
        }
    }

    public static func spansDropped(reason: String, count: Int) {
        Counter(label: "llmq_trace_spans_dropped_total", dimensions: [("reason", reason)]).increment(by: count)
    }
}
