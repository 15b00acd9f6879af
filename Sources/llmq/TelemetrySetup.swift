import Foundation
import LLMQ
import LLMQMonitoring
import Logging
import Metrics
import Prometheus
import Tracing

/// Chooses the metrics and tracing backends, once per process, as LogSetup does for logs.
enum TelemetrySetup {
    /// Prometheus behind swift-metrics; returns the registry the process exposes.
    static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(MetricsBackend.factory(registry: registry))
        return registry
    }

    /// The OTLP tracer behind swift-distributed-tracing when `tracing.otlp_endpoint`
    /// is set; returns its exporter, a service to run. Otherwise the no-op tracer stays.
    static func bootstrapTracing(_ config: TracingConfig, worker: String, logger: Logger) -> OTLPExporter? {
        guard config.isEnabled else { return nil }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let hostname = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let exporter = OTLPExporter(
            config: config, resource: ["service.instance.id": worker, "host.name": hostname, "process.pid": String(getpid())], logger: logger)
        InstrumentationSystem.bootstrap(OTLPTracer(exporter: exporter, sampleRatio: config.sampleRatio))
        logger.info("tracing to \(config.otlpEndpoint ?? "")", metadata: ["service_name": "\(config.serviceName)"])
        return exporter
    }
}
