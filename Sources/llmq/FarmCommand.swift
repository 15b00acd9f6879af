import ArgumentParser
import LLMQ
import Logging
import ServiceLifecycle

struct FarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "farm",
        abstract: "Run a supervisor with N worker processes; SIGTERM or SIGINT drains them and exits 0.")

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Worker processes, overriding the file.")
    var workers: Int?

    func run() async throws {
        var config = try options.load()
        if let workers { config.workers = workers }
        try ConfigLoader.validate(config, source: options.config ?? "the defaults")
        LogSetup.bootstrap(level: config.logLevel, format: config.logFormat)
        let logger = Logger(label: "llmq.farm")
        let supervisor = Supervisor(
            settings: .init(
                workers: config.workers, workerArguments: ["worker", "--slot", "{slot}"] + options.forwarded,
                restartBackoff: config.restartBackoffS, restartBackoffMax: config.restartBackoffMaxS),
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: supervisor)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
