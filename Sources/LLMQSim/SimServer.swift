import Hummingbird
import Logging
import ServiceLifecycle

/// A simulated LLM provider speaking the OpenAI HTTP API on loopback, for tests and
/// `make run`. Answers are deterministic; how each request is answered (token count,
/// pacing, faults, tool calls) is chosen by knobs in its model name or `X-Sim` header,
/// described in ``SimKnobs``.
///
/// Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
/// `GET /v1/models`, and `GET /sim/stats` (`requests`, `active` streams, `aborted` streams).
///
/// Cancelling ``run(onReady:)`` shuts the server down gracefully: idle connections close
/// and open streams are cut at their next pause.
public struct SimServer: Sendable {
    static let models = ["sim-1", "sim-large", "sim-embed-1"]

    let host: String
    let port: Int
    let logger: Logger

    public init(host: String = "127.0.0.1", port: Int = 0, logger: Logger = Logger(label: "llmq.sim")) {
        self.host = host
        self.port = port
        self.logger = logger
    }

    /// Runs until the task is cancelled. Calls onReady with the bound port once listening.
    public func run(onReady: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            router: self.router(),
            configuration: .init(address: .hostname(self.host, port: self.port), serverName: "llmq-sim"),
            onServerRunning: { channel in await onReady(channel.localAddress?.port ?? 0) },
            logger: self.logger
        )
        // No signal handling here: whoever runs the sim owns the process's signals.
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: self.logger)
        // Hummingbird cancelled outright logs errors as it stops, while a graceful shutdown
        // is quiet; so the group runs shielded from this task's cancellation, which triggers
        // the graceful shutdown instead.
        let running = Task { try await group.run() }
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }

    private func router() -> Router<BasicRequestContext> {
        let state = SimState()
        let player = SimStreamPlayer(state: state, logger: self.logger)
        let chat = SimCompletionEndpoint(endpoint: .chat, state: state, player: player)
        let text = SimCompletionEndpoint(endpoint: .text, state: state, player: player)
        let embeddings = SimEmbeddingEndpoint(state: state, player: player)

        let router = Router()
        router.post("v1/chat/completions") { request, context in
            try await chat.respond(to: request, context: context)
        }
        router.post("v1/completions") { request, context in
            try await text.respond(to: request, context: context)
        }
        router.post("v1/embeddings") { request, context in
            try await embeddings.respond(to: request, context: context)
        }
        router.get("v1/models") { _, _ in
            let data = Self.models.map { id -> SimJSON in
                ["id": .string(id), "object": "model", "created": 0, "owned_by": "llmq-sim"]
            }
            let json: SimJSON = ["object": "list", "data": .array(data)]
            return SimStreamPlayer.json(json.buffer)
        }
        router.get("sim/stats") { _, _ in
            await SimStreamPlayer.json(state.stats.buffer)
        }
        return router
    }
}
