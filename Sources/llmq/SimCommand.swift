import ArgumentParser
import LLMQSim
import Logging

struct SimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run the simulated provider: an OpenAI-compatible streaming server with injectable faults.")

    @Option(name: .long, help: "Port to listen on (0 picks a free one).")
    var port: Int = 8089

    @Option(name: .long, help: "Address to listen on.")
    var host: String = "127.0.0.1"

    func run() async throws {
        LogSetup.bootstrap(level: "info", format: "text")
        let sim = SimServer(host: host, port: port)
        try await sim.run { port in print("llmq sim listening on http://\(host):\(port)/v1") }
    }
}
