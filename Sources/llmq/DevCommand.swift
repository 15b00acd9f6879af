import ArgumentParser
import Foundation
import LLMQ
import LLMQGateway
import LLMQSim
import Logging
import ServiceLifecycle

struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Start a private redis-server, the simulated provider and a farm, stream a sample job, and keep running until Ctrl-C.")

    @Option(name: .long, help: "Worker processes.")
    var workers: Int = 2

    @Option(name: .long, help: "Redis port (default: a free one).")
    var redisPort: Int?

    @Option(name: .long, help: "Port of the simulated provider (default: a free one).")
    var simPort: Int = 0

    @Option(name: .long, help: "Working folder for redis-server and the generated configuration (default: a new private folder in $TMPDIR).")
    var dir: String?

    func run() async throws {
        LogSetup.bootstrap(level: "notice", format: "text")
        let logger = Logger(label: "llmq.dev")
        ProcessSetup.prepare(logger: logger)
        // Kept afterwards: the redis-server log and the configuration are worth reading after a session.
        let work = try dir.map { try PrivateDirectory(claiming: $0).path } ?? PrivateDirectory(name: "llmq-dev-\(getpid())").path
        let redis = try LocalRedis(directory: work, port: redisPort)
        say("redis-server   \(redis.urlString)  (private, data in \(work))")

        let (portStream, portIn) = AsyncStream<Int>.makeStream()
        let sim = SimServer(port: simPort, logger: Logger(label: "llmq.sim"))
        let simTask = Task { try await sim.run { port in portIn.yield(port) } }
        var iterator = portStream.makeAsyncIterator()
        guard let simPort = await iterator.next() else { throw ExitCode(1) }
        say("simulated LLM  http://127.0.0.1:\(simPort)/v1")

        let configPath = "\(work)/farm.yaml"
        let openAIKey = ProcessInfo.processInfo.environment["OPENAI_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        try Self.configText(redis: redis.urlString, simPort: simPort, workers: workers, openAI: openAIKey != nil)
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        say("configuration  \(configPath)\(openAIKey != nil ? " (OPENAI_API_KEY found: route \"fast\" uses OpenAI)" : "")")

        let supervisor = Supervisor(
            settings: .init(workers: workers, workerArguments: ["worker", "--slot", "{slot}", "--config", configPath]),
            logger: logger)
        let demo = DemoService(redis: redis.url, exe: ChildProcess.currentExecutable, redisURL: redis.urlString)
        var gatewayConfig = try ConfigLoader.load(path: configPath)
        gatewayConfig.gateway.host = "127.0.0.1"
        gatewayConfig.gateway.port = 0
        let gateway = try GatewayServer(config: gatewayConfig, apiKeys: APIKeys(), logger: Logger(label: "llmq.gateway")) { port in
            print("gateway        http://127.0.0.1:\(port)/  (OpenAI API under /v1, a chat page at /)")
            print("  curl -N http://127.0.0.1:\(port)/v1/chat/completions -H 'Content-Type: application/json' \\")
            print("    -d '{\"model\":\"demo\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'")
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: supervisor), .init(service: gateway), .init(service: demo)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        say("farm           \(workers) workers; Ctrl-C drains and stops everything\n")
        do {
            try await group.run()
        } catch {
            logger.error("farm stopped: \(error)")
        }
        simTask.cancel()
        _ = try? await simTask.value
        await redis.stop()
        say("stopped: farm drained, sim and redis-server shut down")
    }

    static func configText(redis: String, simPort: Int, workers: Int, openAI: Bool) -> String {
        """
        # Written by `llmq dev`. Every key is described in the README.
        redis: \(redis)
        workers: \(workers)
        drain_timeout_s: 10
        log_level: notice
        modes:
          chat: {concurrency: 64}
          complete: {concurrency: 16}
          embed: {concurrency: 16}
        providers:
          sim: {kind: sim, base_url: "http://127.0.0.1:\(simPort)/v1", timeout_s: 60, idle_timeout_s: 15}
        \(openAI ? "  openai: {kind: openai, base_url: \"https://api.openai.com/v1\", api_key_env: OPENAI_API_KEY}\n" : "")\
        routes:
          demo: ["sim/sim:tokens=40,delay_ms=40,first_ms=150"]
          fast: [\(openAI ? "\"openai/gpt-4o-mini\", " : "")"sim/sim:tokens=20,delay_ms=5"]

        """
    }

    private func say(_ s: String) { print(s) }
}

/// Streams one sample job, then tells the user how to send more.
struct DemoService: Service {
    let redis: RedisURL
    let exe: String
    let redisURL: String

    func run() async throws {
        let keys = Keys()
        let id = "demo-\(UUID().uuidString.prefix(6).lowercased())"
        let events = try RequestWatcher.subscribe(url: redis, keys: keys, id: id)
        let job: JSONValue = [
            "id": .string(id), "model": "demo",
            "messages": [["role": "user", "content": "Tell me about Redis streams."]],
            "metadata": ["source": "make run"],
        ]
        try Producer(url: redis, keys: keys).push(job, mode: "chat")
        print("$ llmq enqueue --model demo \"Tell me about Redis streams.\"   (job \(id))")
        _ = await EventPrinter(json: false).print(events)
        let port = redis.port
        print("""

            Send more while it runs (in another terminal):
              \(exe) enqueue --redis \(redisURL) --model demo "Your prompt"
              \(exe) enqueue --redis \(redisURL) --model demo --json "Raw NDJSON events"
              redis-cli -p \(port) SUBSCRIBE 'llmq:{job-1}:tokens'      # watch, then in a third terminal:
              redis-cli -p \(port) LPUSH 'llmq:{chat}:queue' '{"id":"job-1","model":"demo","messages":[{"role":"user","content":"Hi"}]}'
              \(exe) tail --redis \(redisURL) job-1                     # replay from the log
            Models: demo (slow, readable), fast, sim/sim:tokens=N,delay_ms=D,fault=429 ...
            Ctrl-C to drain and stop.
            """)
        try await gracefulShutdown()
    }
}
