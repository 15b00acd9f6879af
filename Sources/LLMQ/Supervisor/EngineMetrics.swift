import CoreMetrics

/// The managed engines' metrics, emitted by the farm process (so /metrics has them
/// without a `worker` label). They are not in `MetricCatalog`: a farm without
/// engines has no such series, and the catalog lists what every scrape holds.
enum EngineMetrics {
    static func up(provider: String, _ up: Bool) {
        Gauge(label: "llmq_engine_up", dimensions: [("provider", provider)]).record(up ? 1 : 0)
    }

    static func restarted(provider: String) {
        Counter(label: "llmq_engine_restarts_total", dimensions: [("provider", provider)]).increment()
    }

    static func started(provider: String, seconds: Double) {
        Gauge(label: "llmq_engine_start_seconds", dimensions: [("provider", provider)]).record(seconds)
    }
}
