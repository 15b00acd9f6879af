import ArgumentParser
import LLMQ

@main
struct LLMQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llmq",
        abstract: "A Redis-fed worker farm that streams LLM completions as NDJSON events.",
        subcommands: [
            DevCommand.self, FarmCommand.self, WorkerCommand.self, GatewayCommand.self, SimCommand.self, EnqueueCommand.self, TailCommand.self, CancelCommand.self, ModelsCommand.self,
            StatsCommand.self, DeadCommand.self, DrainCommand.self, ReloadCommand.self,
        ]
    )
}

/// Options every command that reads the farm's configuration shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (YAML or JSON).")
    var config: String?

    @Option(name: .long, help: "Redis URL, overriding the file and LLMQ_REDIS_URL.")
    var redis: String?

    @Option(name: .long, help: "Key prefix, overriding the file and LLMQ_PREFIX.")
    var prefix: String?

    func load() throws -> FarmConfig {
        var c = try ConfigLoader.load(path: config)
        if let redis { c.redis = redis }
        if let prefix { c.prefix = prefix }
        try ConfigLoader.validate(c, source: config ?? "the defaults")
        return c
    }

    /// The same options, as arguments for a child process.
    var forwarded: [String] {
        (config.map { ["--config", $0] } ?? []) + (redis.map { ["--redis", $0] } ?? []) + (prefix.map { ["--prefix", $0] } ?? [])
    }
}

/// Options of the commands that only talk to Redis.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Redis URL (default: LLMQ_REDIS_URL or redis://127.0.0.1:6379).")
    var redis: String?

    @Option(name: .long, help: "Key prefix (default: LLMQ_PREFIX or llmq).")
    var prefix: String?

    var url: RedisURL {
        get throws {
            try RedisURL(redis ?? ProcessInfo.processInfo.environment["LLMQ_REDIS_URL"] ?? "redis://127.0.0.1:6379")
        }
    }

    @Option(name: .long, help: "How the farm publishes request channels: sharded or classic (default: sharded on redis+cluster://, else classic).")
    var pubsub: PubSub?

    var keys: Keys {
        Keys(prefix: prefix ?? ProcessInfo.processInfo.environment["LLMQ_PREFIX"] ?? "llmq", pubsub: PubSub.resolve(pubsub, for: try? url))
    }
}

import Foundation
