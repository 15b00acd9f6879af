import ArgumentParser
import LLMQ
import Logging

struct ModelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the models a configured provider offers (/models, Ollama's /api/tags, …).")

    @OptionGroup var options: ConfigOptions

    @Argument(help: "A provider name from the configuration.")
    var provider: String

    func run() async throws {
        let config = try options.load()
        let logger = Logger(label: "llmq.models")
        let registry = try ProviderRegistry(config: config, logger: logger)
        let engine = HTTPEngine(sink: nil)
        engine.start()
        let models: Result<[String], LLMQError>
        do {
            models = .success(try await registry.models(of: provider, engine: engine))
        } catch {
            models = .failure(error)
        }
        await engine.shutdown()
        for model in try models.get() { print(model) }
    }
}
