import CoreMetrics

/// Per-tenant metrics of `schedule: fair` modes. The `tenant` label is bounded
/// like `ModelLabels`: a configured tenant, `none` for jobs without one, or `other`.
extension FarmMetrics {
    /// Jobs of a tenant this worker took.
    public static func tenantStarted(mode: Mode, tenant: String, count: Int) {
        Counter(label: "llmq_tenant_jobs_started_total", dimensions: [("mode", mode.rawValue), ("tenant", tenant)]).increment(by: count)
    }

    /// Jobs of a tenant running across the farm, and waiting for their turn (sampled from Redis).
    public static func tenantQueue(mode: Mode, tenant: String, running: Int, waiting: Int) {
        Gauge(label: "llmq_tenant_running_jobs", dimensions: [("mode", mode.rawValue), ("tenant", tenant)]).record(running)
        Gauge(label: "llmq_tenant_waiting_jobs", dimensions: [("mode", mode.rawValue), ("tenant", tenant)]).record(waiting)
    }
}
