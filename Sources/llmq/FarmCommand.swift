import ArgumentParser
import Foundation
import LLMQ
import LLMQMonitoring
import Logging
import ServiceLifecycle

struct FarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "farm",
        abstract: "Run a supervisor with N worker processes; SIGTERM or SIGINT drains them and exits 0.")

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Worker processes, overriding the file.")
    var workers: Int?

    @Option(name: .customLong("http-port"), help: "Port of /metrics, /healthz and /readyz, overriding http_port (0: off).")
    var httpPort: Int?

    func run() async throws {
        var config = try options.load()
        if let workers { config.workers = workers }
        if let httpPort { config.httpPort = httpPort }
        try ConfigLoader.validate(config, source: options.config ?? "the defaults")
        LogSetup.bootstrap(level: config.logLevel, format: config.logFormat)
        if config.httpPort > 0 { try MonitoringServer.checkPort(host: config.httpHost, port: config.httpPort) }
        let logger = Logger(label: "llmq.farm")
        ProcessSetup.prepare(logger: logger)
        let registry = TelemetrySetup.bootstrapMetrics()
        let readiness = Readiness()
        // Each worker rewrites its metrics into this folder every second; /metrics merges them.
        let folder = try PrivateDirectory(name: "llmq-farm-\(getpid())")
        let metricsDir = folder.path
        FarmMetrics.primeWorkerRestarts(slots: config.workers)
        // Managed engines report to the workers through the same private folder.
        let engines = try EngineManager(config: config, dir: metricsDir, logger: Logger(label: "llmq.engine"))
        var workerEnvironment = Supervisor.workerEnvironment()
        workerEnvironment[EngineState.environmentKey] = metricsDir

        let supervisor = Supervisor(
            settings: .init(
                workers: config.workers,
                workerArguments: ["worker", "--slot", "{slot}", "--metrics-file", "\(metricsDir)/worker-{slot}.prom"] + options.forwarded,
                restartBackoff: config.restartBackoffS, restartBackoffMax: config.restartBackoffMaxS, environment: workerEnvironment),
            logger: logger,
            onRestart: { slot in FarmMetrics.workerRestart(slot: slot) })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if config.httpPort > 0 {
            services.append(.init(service: MonitoringServer(
                host: config.httpHost, port: config.httpPort, readiness: readiness, logger: logger,
                render: { MetricsBackend.exposition(registry: registry, workersDirectory: metricsDir) })))
            services.append(.init(service: QueueSampler(
                url: try RedisURL(config.redis), keys: Keys(prefix: config.prefix), modes: config.modes.keys.sorted(),
                readiness: readiness, scheduling: .init(config: config), logger: logger)))
        }
        services.append(.init(service: engines))
        services.append(.init(service: supervisor))
        // SIGHUP or `llmq reload`: the same file, environment and flags as at start, validated before anything changes.
        let (options, workers, httpPort) = (options, workers, httpPort)
        services.append(.init(service: try ReloadController(
            initial: config,
            load: { () throws(LLMQError) -> FarmConfig in
                do {
                    var c = try options.load()
                    if let workers { c.workers = workers }
                    if let httpPort { c.httpPort = httpPort }
                    try ConfigLoader.validate(c, source: options.config ?? "the defaults")
                    return c
                } catch let e as LLMQError {
                    throw e
                } catch {
                    throw .configuration("\(options.config ?? "the configuration"): \(error)")
                }
            },
            supervisor: supervisor, engines: engines, farm: Worker.defaultID(), logger: logger)))
        services.append(.init(service: DrainWatch(readiness: readiness)))
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            folder.remove()
            throw error
        }
        folder.remove()
        // Every worker has exited and every service stopped. Leave at once: under load the farm was seen
        // hanging after this point (in exit-time handlers, with library threads still parked), and a
        // deploy waits for this process.
        fflush(nil)
        _exit(0)
    }
}
