/// Every metric family llmq exposes, with its Prometheus type, labels and help
/// text. swift-metrics carries no help text, so the exposition takes it from
/// here; the README's metrics table, the Grafana dashboard and the alert rules
/// are checked against this list and a real scrape.
public enum MetricCatalog {
    public struct Family: Sendable {
        public let name: String
        public let type: String
        public let labels: [String]
        public let help: String
    }

    public static let families: [Family] = [
        // Requests (worker processes)
        .init(name: "llmq_requests_total", type: "counter", labels: ["mode", "provider", "model", "outcome"],
              help: "Requests that ended, by outcome (done or an error code)."),
        .init(name: "llmq_request_duration_seconds", type: "histogram", labels: ["mode", "provider"],
              help: "Time from pick-up to the terminal event."),
        .init(name: "llmq_time_to_first_token_seconds", type: "histogram", labels: ["mode", "provider"],
              help: "Time from pick-up to the first output sent to subscribers."),
        .init(name: "llmq_dispatch_seconds", type: "histogram", labels: ["mode"],
              help: "Time from a job leaving Redis to its first request being handed to libcurl: what this worker adds before the provider."),
        .init(name: "llmq_tokens_in_total", type: "counter", labels: ["mode", "provider", "model"],
              help: "Prompt tokens reported by providers."),
        .init(name: "llmq_tokens_out_total", type: "counter", labels: ["mode", "provider", "model"],
              help: "Completion tokens reported by providers."),
        .init(name: "llmq_retries_total", type: "counter", labels: ["mode", "reason"],
              help: "Attempts retried after a retryable failure."),
        .init(name: "llmq_fallbacks_total", type: "counter", labels: ["mode", "provider"],
              help: "Moves to a route's next target after a failure before any output."),
        .init(name: "llmq_cancellations_total", type: "counter", labels: ["mode"],
              help: "Requests cancelled by their producer."),
        .init(name: "llmq_dead_lettered_total", type: "counter", labels: ["mode", "code"],
              help: "Jobs moved to the dead-letter list."),
        .init(name: "llmq_requeued_total", type: "counter", labels: ["mode", "reason"],
              help: "Jobs put back on their queue (drain timeout, lost worker)."),
        .init(name: "llmq_delayed_total", type: "counter", labels: ["mode", "reason"],
              help: "Jobs moved to the delayed set to wait (retry backoff, provider cooldown, not_before)."),
        .init(name: "llmq_promoted_total", type: "counter", labels: ["mode"],
              help: "Due jobs moved from the delayed set back to the head of their queue."),
        .init(name: "llmq_lease_lapses_total", type: "counter", labels: [],
              help: "Times a worker could not renew its heartbeat in time and fenced itself off its jobs."),
        .init(name: "llmq_redis_reconnects_total", type: "counter", labels: ["component"],
              help: "Redis connections re-established after a failure."),
        .init(name: "llmq_provider_cooldowns_total", type: "counter", labels: ["provider"],
              help: "Farm-wide provider cooldowns started."),
        .init(name: "llmq_provider_cooldown_active", type: "gauge", labels: ["provider"],
              help: "1 while a provider is cooling down, else 0."),
        .init(name: "llmq_inflight_jobs", type: "gauge", labels: ["mode"],
              help: "Jobs this worker process holds."),
        .init(name: "llmq_permits_free", type: "gauge", labels: ["mode"],
              help: "Permits this worker process has free."),
        // Supervisor
        .init(name: "llmq_worker_restarts_total", type: "counter", labels: ["slot"],
              help: "Worker processes the supervisor restarted after they died."),
        // Queue sampler (the process that serves /metrics)
        .init(name: "llmq_queue_pending_jobs", type: "gauge", labels: ["mode"],
              help: "Jobs waiting in the queue (LLEN)."),
        .init(name: "llmq_queue_inflight_jobs", type: "gauge", labels: ["mode"],
              help: "Jobs held by live workers, across the farm."),
        .init(name: "llmq_queue_depth_jobs", type: "gauge", labels: ["mode"],
              help: "Pending plus in-flight jobs: what autoscaling should cover."),
        .init(name: "llmq_queue_delayed_jobs", type: "gauge", labels: ["mode"],
              help: "Jobs waiting in the delayed set for a retry backoff, a provider cooldown or their not_before (ZCARD); not in the depth."),
        .init(name: "llmq_queue_delayed_overdue_jobs", type: "gauge", labels: ["mode"],
              help: "Delayed jobs due for over 30 s that no worker has moved back to the queue; 0 while workers serve the mode."),
        .init(name: "llmq_queue_oldest_age_seconds", type: "gauge", labels: ["mode"],
              help: "How long the job next in line has been waiting there, as seen by this sampler."),
        .init(name: "llmq_dead_letter_jobs", type: "gauge", labels: ["mode"],
              help: "Entries in the dead-letter list."),
        .init(name: "llmq_workers_live", type: "gauge", labels: [],
              help: "Workers whose heartbeat is fresh."),
        // Fair scheduling (schedule: fair); tenant is a configured tenant, none or other
        .init(name: "llmq_tenant_jobs_started_total", type: "counter", labels: ["mode", "tenant"],
              help: "Jobs of a tenant this worker took from a fair mode."),
        .init(name: "llmq_tenant_running_jobs", type: "gauge", labels: ["mode", "tenant"],
              help: "Jobs of a tenant running across the farm (the fair scheduler's counters, summed over shards)."),
        .init(name: "llmq_tenant_waiting_jobs", type: "gauge", labels: ["mode", "tenant"],
              help: "Jobs of a tenant sorted and waiting for their turn, summed over priorities and shards."),
        .init(name: "llmq_ready", type: "gauge", labels: [],
              help: "1 while this process answers /readyz with 200 (Redis reachable, not draining)."),
        // Embedding cache (worker processes)
        .init(name: "llmq_embed_cache_hits_total", type: "counter", labels: ["provider"],
              help: "Embed inputs answered from the embedding cache in Redis."),
        .init(name: "llmq_embed_cache_misses_total", type: "counter", labels: ["provider"],
              help: "Embed inputs of cached routes or providers that went upstream."),
        .init(name: "llmq_embed_cache_saved_bytes_total", type: "counter", labels: ["provider"],
              help: "Vector bytes answered from the embedding cache instead of the provider."),
        // Tracing
        .init(name: "llmq_trace_spans_dropped_total", type: "counter", labels: ["reason"],
              help: "Spans not delivered to the OTLP endpoint."),
    ]

    public static let byName: [String: Family] = Dictionary(uniqueKeysWithValues: families.map { ($0.name, $0) })
}
