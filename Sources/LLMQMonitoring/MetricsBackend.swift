import Foundation
import LLMQ
import Prometheus

/// The Prometheus side of llmq's metrics: a factory whose histogram buckets
/// suit LLM latencies, and the exposition a process serves, its own registry
/// merged with the files of the workers it supervises.
public enum MetricsBackend {
    /// Request latency runs from well under a second (embeddings) to minutes (long answers).
    public static let durationBuckets: [Duration] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300].map { .milliseconds(Int64($0 * 1000)) }
    /// What a worker adds between Redis and the provider: tens of microseconds idle, milliseconds in a burst.
    public static let dispatchBuckets: [Duration] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000, 1_000_000].map { .microseconds($0) }
    public static let firstTokenBuckets: [Duration] = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30].map { .milliseconds(Int64($0 * 1000)) }

    /// A factory to pass to `MetricsSystem.bootstrap` (the executable does, once per process).
    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = durationBuckets
        f.durationHistogramBuckets = [
            "llmq_request_duration_seconds": durationBuckets,
            "llmq_time_to_first_token_seconds": firstTokenBuckets,
            "llmq_dispatch_seconds": dispatchBuckets,
        ]
        return f
    }

    /// This process's metrics, plus each fresh worker file of `workersDirectory` labelled `worker="ID"`.
    public static func exposition(registry: PrometheusCollectorRegistry, workersDirectory: String? = nil) -> [UInt8] {
        var sources = [MetricsExposition.Source(worker: nil, text: registry.emitToBuffer())]
        if let workersDirectory { sources += MetricsFiles.read(directory: workersDirectory) }
        return MetricsExposition.merge(sources)
    }
}
