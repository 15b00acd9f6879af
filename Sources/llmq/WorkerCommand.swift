import ArgumentParser
import LLMQ
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

    func run() async throws {
        let config = try options.load()
        LogSetup.bootstrap(level: config.logLevel, format: config.logFormat)
        let logger = Logger(label: "llmq.worker")
        let worker = try Worker(id: id ?? Worker.defaultID(slot: slot), config: config, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: worker)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
