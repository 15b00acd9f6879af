import ArgumentParser
import LLMQ
import LLMQMonitoring
import Logging
import ServiceLifecycle

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one worker process (for systemd, Kubernetes, or under `llmq farm`); SIGTERM drains it.")

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Worker id (default: HOSTNAME-SLOT, or HOSTNAME-PID without --slot).")
    var id: String?

    @Option(name: .long, help: "Slot number under a supervisor; gives a stable id across restarts.")
    var slot: Int?

    @Option(name: .customLong("http-port"), help: "Serve /metrics, /healthz and /readyz on this port (a worker run alone; default: none).")
    var httpPort: Int?

    @Option(name: .customLong("metrics-file"), help: "Rewrite this file with the worker's metrics every second (set by `llmq farm`).")
    var metricsFile: String?

    func run() async throws {
        let config = try options.load()
        LogSetup.bootstrap(level: config.logLevel, format: config.logFormat)
        if let httpPort, httpPort > 0 { try MonitoringServer.checkPort(host: config.httpHost, port: httpPort) }
        let logger = Logger(label: "llmq.worker")
        ProcessSetup.prepare(logger: logger)
        let workerID = id ?? Worker.defaultID(slot: slot)
        let registry = TelemetrySetup.bootstrapMetrics()
        let exporter = TelemetrySetup.bootstrapTracing(config.tracing, worker: workerID, logger: logger)
        FarmMetrics.primeWorker(modes: config.modes.mapValues(\.concurrency))
        let worker = try Worker(id: workerID, config: config, logger: logger)
        let readiness = Readiness()

        // Shutdown runs in reverse order: readiness flips first, the worker drains,
        // then the metrics are written a last time and spans flushed.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let exporter { services.append(.init(service: exporter)) }
        if let httpPort, httpPort > 0 {
            services.append(.init(service: MonitoringServer(
                host: config.httpHost, port: httpPort, readiness: readiness, logger: logger,
                render: { MetricsBackend.exposition(registry: registry) })))
            services.append(.init(service: QueueSampler(
                url: try RedisURL(config.redis), keys: Keys(prefix: config.prefix), modes: config.modes.keys.sorted(),
                worker: workerID, readiness: readiness, scheduling: .init(config: config), logger: logger)))
        }
        if let metricsFile {
            services.append(.init(service: MetricsFileWriter(path: metricsFile, worker: workerID, logger: logger) { registry.emitToBuffer() }))
        }
        // A worker that stops by itself (`llmq drain`) shuts the rest down gracefully too.
        services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup))
        services.append(.init(service: DrainWatch(readiness: readiness)))
        // Under a supervisor that dies without draining it (SIGKILL, OOM), the worker drains itself.
        if let watch = SupervisorWatch.fromEnvironment(logger: logger) {
            services.append(.init(service: watch, successTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
