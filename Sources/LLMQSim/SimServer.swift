import Hummingbird
import Logging
import ServiceLifecycle

/// A simulated LLM provider speaking the OpenAI HTTP API on loopback, for tests and
/// `make run`. Answers are deterministic; how each request is answered (token count,
/// pacing, faults, tool calls) is chosen by knobs in its model name or `X-Sim` header,
/// described in ``SimKnobs``.
///
/// Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
/// `GET /v1/models`, and `GET /sim/stats` (`requests`, `active` streams, `aborted` streams);
/// and every other provider's wire format, chosen by path as the real servers are
/// (see ``SimWireFormat``): Azure's `/openai/deployments/…`, Anthropic's `/v1/messages`,
/// Gemini's `/v1beta/models/MODEL:METHOD`, Cohere's `/v2/chat` and `/v2/embed`,
/// Ollama's `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, and TGI's
/// `/generate_stream`, `/generate`, `/info`.
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
        let anthropic = SimAnthropicEndpoint(state: state, player: player)
        let gemini = SimGeminiEndpoint(state: state, player: player)
        let cohere = SimCohereEndpoint(state: state, player: player)
        let ollama = SimOllamaEndpoint(state: state, player: player)
        let tgi = SimTGIEndpoint(state: state, player: player)

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
        router.get("v1/models") { request, _ in
            // One path, three providers: Anthropic's clients send anthropic-version, Cohere's page_size.
            if request.headers.contains(where: { $0.name.canonicalName == "anthropic-version" }) {
                let data = Self.models.map { id -> SimJSON in ["type": "model", "id": .string(id), "display_name": .string(id), "created_at": "2025-01-01T00:00:00Z"] }
                return SimStreamPlayer.json((["data": .array(data), "has_more": .bool(false)] as SimJSON).buffer)
            }
            if request.uri.queryParameters.get("page_size") != nil { return SimCohereEndpoint.models() }
            let data = Self.models.map { id -> SimJSON in
                ["id": .string(id), "object": "model", "created": 0, "owned_by": "llmq-sim"]
            }
            let json: SimJSON = ["object": "list", "data": .array(data)]
            return SimStreamPlayer.json(json.buffer)
        }
        // Azure OpenAI: the deployment names the model, api-version and api-key are required.
        for (path, isEmbeddings) in [("chat/completions", false), ("completions", false), ("embeddings", true)] {
            let completion = path == "completions" ? text : chat
            router.post("openai/deployments/:deployment/\(path)") { request, context in
                await state.count(format: "azure")
                if let refusal = Self.azureRefusal(request) { return refusal }
                let deployment = context.parameters.get("deployment")
                return isEmbeddings
                    ? try await embeddings.respond(to: request, context: context, deployment: deployment)
                    : try await completion.respond(to: request, context: context, deployment: deployment)
            }
        }
        router.post("v1/messages") { request, context in
            try await anthropic.respond(to: request, context: context)
        }
        for version in ["v1beta", "v1"] {
            router.post("\(version)/models/:target") { request, context in
                try await gemini.respond(to: request, context: context, target: context.parameters.get("target") ?? "")
            }
        }
        router.get("v1beta/models") { _, _ in SimGeminiEndpoint.models() }
        router.post("v2/chat") { request, context in
            try await cohere.respond(to: request, context: context, embed: false)
        }
        router.post("v2/embed") { request, context in
            try await cohere.respond(to: request, context: context, embed: true)
        }
        router.post("api/chat") { request, context in
            try await ollama.respond(to: request, context: context, kind: .chat)
        }
        router.post("api/generate") { request, context in
            try await ollama.respond(to: request, context: context, kind: .generate)
        }
        router.post("api/embed") { request, context in
            try await ollama.respond(to: request, context: context, kind: .embed)
        }
        router.get("api/tags") { _, _ in SimOllamaEndpoint.tags() }
        router.post("generate_stream") { request, context in
            try await tgi.respond(to: request, context: context, stream: true)
        }
        router.post("generate") { request, context in
            try await tgi.respond(to: request, context: context, stream: false)
        }
        router.get("info") { _, _ in SimTGIEndpoint.info() }
        router.get("sim/stats") { _, _ in
            await SimStreamPlayer.json(state.stats.buffer)
        }
        return router
    }

    /// What Azure answers a request without `api-version` or a key.
    static func azureRefusal(_ request: Request) -> Response? {
        if request.uri.queryParameters.get("api-version") == nil {
            return SimAPIError(status: .notFound, message: "Resource not found (simulated: api-version is missing).", type: "", code: "404").response
        }
        let keyed = request.headers.contains { ["api-key", "authorization"].contains($0.name.canonicalName) }
        if !keyed {
            return SimAPIError(
                status: .unauthorized, message: "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
                type: "", code: "401").response
        }
        return nil
    }
}
