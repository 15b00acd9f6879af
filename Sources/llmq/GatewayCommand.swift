import ArgumentParser
import Foundation
import LLMQ
import LLMQGateway
import Logging
import Metrics
import ServiceLifecycle

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Serve the farm over OpenAI's HTTP API (chat, completions, embeddings, models) and SSE for browsers; only pushes jobs and follows them.")

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Port to listen on, overriding gateway.port (0: any free port).")
    var port: Int?

    @Option(name: .long, help: "Address to listen on, overriding gateway.host.")
    var host: String?

    func run() async throws {
        var config = try options.load()
        if let port { config.gateway.port = port }
        if let host { config.gateway.host = host }
        if let v = ProcessInfo.processInfo.environment["LLMQ_GATEWAY_PORT"], !v.isEmpty, port == nil {
            guard let n = Int(v) else { throw ValidationError("LLMQ_GATEWAY_PORT=\(v) is not a whole number") }
            config.gateway.port = n
        }
        try GatewayConfig.validate(config.gateway, source: options.config ?? "the defaults")
        LogSetup.bootstrap(level: config.logLevel, format: config.logFormat)
        let logger = Logger(label: "llmq.gateway")
        let keys = try APIKeys.load(config.gateway)
        let shownHost = config.gateway.host == "0.0.0.0" ? "127.0.0.1" : config.gateway.host
        let server = try GatewayServer(config: config, apiKeys: keys, logger: logger) { port in
            // Tests and scripts read the bound port from this line; FileHandle writes it unbuffered.
            FileHandle.standardOutput.write(Data("llmq gateway listening on http://\(shownHost):\(port)\n".utf8))
        }
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
