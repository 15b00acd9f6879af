import CoreMetrics

extension FarmMetrics {
    /// A job left a worker to wait in its mode's delayed set.
    public static func delayed(mode: Mode, reason: String) {
        Counter(label: "llmq_delayed_total", dimensions: [("mode", mode.rawValue), ("reason", reason)]).increment()
    }

    /// Due jobs moved from the delayed set back to the head of their queue.
    public static func promoted(mode: Mode, count: Int) {
        Counter(label: "llmq_promoted_total", dimensions: [("mode", mode.rawValue)]).increment(by: count)
    }

    /// This worker went too long without renewing its heartbeat and stopped writing for its jobs.
    public static func leaseLapsed() {
        Counter(label: "llmq_lease_lapses_total", dimensions: []).increment()
    }

    /// Publishes the lifecycle families at zero, so dashboards and alerts see them before the first event.
    public static func primeLifecycle(modes: [Mode]) {
        for m in modes {
            Counter(label: "llmq_delayed_total", dimensions: [("mode", m.rawValue), ("reason", "retry")]).increment(by: 0)
            Counter(label: "llmq_promoted_total", dimensions: [("mode", m.rawValue)]).increment(by: 0)
            _ = DispatchHandles.cache[m]
        }
        Counter(label: "llmq_lease_lapses_total", dimensions: []).increment(by: 0)
    }
}
