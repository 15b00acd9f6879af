import LLMQ
import Prometheus

/// The gateway's Prometheus metrics, on a registry of its own served at /metrics.
/// Thread rules: any thread (the registry and its collectors lock internally).
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    /// Every family, for the README's table and the dashboard.
    public static let families: [(name: String, help: String)] = [
        ("llmq_gateway_requests_total", "HTTP requests answered, by endpoint and status."),
        ("llmq_gateway_rejected_total", "Requests refused before queueing, by reason: auth, admission, cooldown, tenant."),
        ("llmq_gateway_active_requests", "Requests being answered now."),
        ("llmq_gateway_subscriptions", "Request channels subscribed on the gateway's one subscriber connection."),
        ("llmq_gateway_waiting_jobs", "Jobs waiting or running per mode (pending + in-flight + delayed), as admission control sees them."),
        ("llmq_gateway_client_disconnects_total", "Clients that left before the end of their answer."),
        ("llmq_gateway_cancels_total", "Cancellations the gateway sent (DELETE, or a client that left)."),
        ("llmq_gateway_time_to_first_byte_seconds", "From the request's arrival to the first byte of its answer."),
    ]

    static let firstByteBuckets: [Duration] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map { .microseconds(Int64($0 * 1e6)) }

    private func help(_ name: String) -> String { Self.families.first { $0.name == name }?.help ?? "" }

    private func descriptor(_ name: String, unit: String = "") -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: unit.isEmpty ? name : String(name.dropLast(unit.count + 1)), unitName: unit, helpText: help(name))
    }

    public init() {}

    public func answered(endpoint: String, status: Int) {
        registry.makeCounter(descriptor: descriptor("llmq_gateway_requests_total", unit: "total"),
                             labels: [("endpoint", endpoint), ("status", String(status))]).increment()
    }

    public func rejected(_ reason: String) {
        registry.makeCounter(descriptor: descriptor("llmq_gateway_rejected_total", unit: "total"), labels: [("reason", reason)]).increment()
    }

    public func active(_ delta: Double) {
        registry.makeGauge(descriptor: descriptor("llmq_gateway_active_requests")).increment(by: delta)
    }

    public func subscriptions(_ n: Int) {
        registry.makeGauge(descriptor: descriptor("llmq_gateway_subscriptions")).set(Double(n))
    }

    public func waiting(mode: Mode, _ n: Int) {
        registry.makeGauge(descriptor: descriptor("llmq_gateway_waiting_jobs"), labels: [("mode", mode.rawValue)]).set(Double(n))
    }

    public func clientLeft() {
        registry.makeCounter(descriptor: descriptor("llmq_gateway_client_disconnects_total", unit: "total")).increment()
    }

    public func cancelled() {
        registry.makeCounter(descriptor: descriptor("llmq_gateway_cancels_total", unit: "total")).increment()
    }

    public func firstByte(_ d: Duration) {
        registry.makeDurationHistogram(descriptor: descriptor("llmq_gateway_time_to_first_byte_seconds", unit: "seconds"), buckets: Self.firstByteBuckets).record(d)
    }

    public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
