import Foundation
import Hummingbird
import LLMQ
import Logging
import ServiceLifecycle

/// `llmq gateway` as a `Service`: the OpenAI-compatible API, the browser page, and the
/// gateway's /metrics, /healthz and /readyz on one port. A graceful shutdown turns /readyz
/// to 503 and lets open answers finish.
public struct GatewayServer: Service {
    let gateway: Gateway
    let logger: Logger
    let onReady: @Sendable (Int) async -> Void

    public init(config: FarmConfig, apiKeys: APIKeys, logger: Logger, onReady: @escaping @Sendable (Int) async -> Void = { _ in }) throws(LLMQError) {
        gateway = try Gateway(config: config, apiKeys: apiKeys, logger: logger)
        self.logger = logger
        self.onReady = onReady
    }

    public var metrics: GatewayMetrics { gateway.metrics }

    public func run() async throws {
        gateway.start()
        defer { gateway.stop() }
        let sampler = Task { await gateway.runSampler() }
        defer { sampler.cancel() }
        let g = gateway.config.gateway
        if gateway.apiKeys.isOpen {
            logger.warning("the gateway is open: no API keys configured (gateway.keys_file or $\(g.keysEnv ?? "LLMQ_GATEWAY_KEYS")); anyone who reaches it can use the farm")
        } else {
            logger.info("gateway API keys loaded", metadata: ["keys": "\(gateway.apiKeys.count)"])
        }
        let app = Application(
            router: Self.router(gateway),
            configuration: .init(address: .hostname(g.host, port: g.port), serverName: "llmq-gateway"),
            onServerRunning: { [logger, onReady, g] channel in
                let bound = channel.localAddress?.port ?? g.port
                logger.notice("gateway listening", metadata: ["address": "\(g.host):\(bound)"])
                await onReady(bound)
            },
            logger: logger)
        try await withGracefulShutdownHandler {
            try await app.run()
        } onGracefulShutdown: {
            gateway.readiness.startDraining()
        }
    }

    static func router(_ gateway: Gateway) -> Router<BasicRequestContext> {
        let completions = CompletionEndpoint(gateway: gateway)
        let requests = RequestsEndpoint(gateway: gateway)
        let router = Router()
        router.post("v1/chat/completions") { request, context in try await completions.respond(to: request, context: context, kind: .chat) }
        router.post("v1/completions") { request, context in try await completions.respond(to: request, context: context, kind: .completion) }
        router.post("v1/embeddings") { request, context in try await completions.respond(to: request, context: context, kind: .embedding) }
        router.get("v1/models") { request, _ in try requests.models(request) }
        router.post("v1/jobs") { request, context in try await requests.submit(request, context: context) }
        router.get("v1/requests/:id/events") { request, context in try await requests.events(request, context: context) }
        router.get("v1/requests/:id") { request, context in try await requests.result(request, context: context) }
        router.delete("v1/requests/:id") { request, context in try await requests.cancel(request, context: context) }
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: GatewayPage.html)))
        }
        router.get("metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: gateway.metrics.exposition())))
        }
        router.get("healthz") { _, _ in Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok\n"))) }
        router.get("readyz") { _, _ in
            let hubUp = gateway.hub.isConnected
            if let why = gateway.readiness.reason ?? (hubUp ? nil : "subscriber connection down") {
                return Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "not ready: \(why)\n")))
            }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        }
        return router
    }
}
