import Foundation
import Logging

/// The configured providers and routes; resolves a job's `model` to an
/// ordered list of targets to try. It also holds what the providers share
/// across jobs: the per-provider concurrency limits of this worker and the
/// farm-wide cooldowns.
public struct ProviderRegistry: Sendable {
    public struct Target: Sendable {
        public var provider: any Provider
        public var model: String
    }

    public let providers: [String: any Provider]
    public let routes: [String: [String]]
    /// `max_concurrency` per provider, for this worker process.
    public let limiter: ProviderLimiter
    /// Farm-wide cooldowns after 429s and repeated failures (`PREFIX:cooldown:PROVIDER`).
    public let cooldowns: CooldownBoard
    /// Vectors of embed jobs shared by the farm (`embed_cache` of routes and providers).
    public let embedCache: EmbeddingCache

    public init(config: FarmConfig, environment: [String: String] = ProcessInfo.processInfo.environment,
                logger: Logger = Logger(label: "llmq.providers")) throws(LLMQError) {
        var built: [String: any Provider] = [:]
        for (name, p) in config.providers {
            let key = try Self.apiKey(name: name, config: p, environment: environment)
            guard let kind = ProviderKind(rawValue: p.kind) else {
                throw .configuration("providers.\(name).kind \"\(p.kind)\" is unknown")
            }
            built[name] = Self.make(kind, name: name, config: p, apiKey: key)
        }
        providers = built
        routes = config.routes
        secrets = config.providers.compactMap { name, p in try? Self.apiKey(name: name, config: p, environment: environment) }
            .filter { $0.count >= 4 }
        limiter = ProviderLimiter(limits: config.providers.compactMapValues(\.maxConcurrency))
        cooldowns = CooldownBoard(url: try? RedisURL(config.redis), keys: Keys(prefix: config.prefix),
                                  policies: config.providers.mapValues(CooldownBoard.Policy.init), logger: logger)
        embedCache = EmbeddingCache(url: try? RedisURL(config.redis), prefix: config.prefix, routes: config.routeEmbedCaches,
                                    providers: config.providers.compactMapValues(\.embedCache), logger: logger)
    }

    /// The provider for a kind: one type per wire format, the OpenAI presets sharing one.
    public static func make(_ kind: ProviderKind, name: String, config: ProviderConfig, apiKey: String?) -> any Provider {
        switch kind {
        case .openai, .sim, .azure, .vllm, .lmstudio, .llamacpp: OpenAIProvider(name: name, config: config, apiKey: apiKey)
        case .anthropic: AnthropicProvider(name: name, config: config, apiKey: apiKey)
        case .gemini: GeminiProvider(name: name, config: config, apiKey: apiKey)
        case .cohere: CohereProvider(name: name, config: config, apiKey: apiKey)
        case .ollama: OllamaProvider(name: name, config: config, apiKey: apiKey)
        case .tgi: TGIProvider(name: name, config: config, apiKey: apiKey)
        }
    }

    /// The models a provider offers (`/models`, Ollama's `/api/tags`, TGI's `/info` …).
    public func models(of provider: String, engine: HTTPEngine) async throws(LLMQError) -> [String] {
        guard let p = providers[provider] else { throw LLMQError(.unknownModel, "no provider named \"\(provider)\"") }
        guard let request = p.modelsRequest() else {
            throw LLMQError(.badRequest, "\(provider) (\(p.config.kind)) has no model list; name deployments in routes instead")
        }
        let body = BodyCollector()
        let result = await engine.perform(request, decoder: body, output: nil)
        guard result.completed && result.isHTTPSuccess else { throw redact(p.error(for: result)) }
        return p.modelNames(from: body.body)
    }

    /// The API keys in use, so that no message that leaves llmq can carry one.
    let secrets: [String]

    /// `text` with every configured API key replaced: the one place keys are removed,
    /// called wherever text that may quote a provider leaves the process.
    public func redact(_ text: String) -> String {
        secrets.reduce(text) { $0.contains($1) ? $0.replacingOccurrences(of: $1, with: "[redacted]") : $0 }
    }

    /// The error with every configured API key in its message replaced.
    public func redact(_ error: LLMQError) -> LLMQError {
        var e = error
        e.message = redact(error.message)
        return e
    }

    static func apiKey(name: String, config p: ProviderConfig, environment: [String: String]) throws(LLMQError) -> String? {
        if let file = p.apiKeyFile {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw .configuration("providers.\(name).api_key_file \(file) cannot be read")
            }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let env = p.apiKeyEnv {
            guard let v = environment[env], !v.isEmpty else {
                throw .configuration("providers.\(name).api_key_env names \(env), which is not set; export it or remove api_key_env")
            }
            return v
        }
        return nil
    }

    /// The targets for a job's model: a route's list, or `PROVIDER/MODEL`.
    public func resolve(_ model: String) throws(LLMQError) -> [Target] {
        if let route = routes[model] {
            return route.compactMap { t in
                guard let slash = t.firstIndex(of: "/"), let p = providers[String(t[..<slash])] else { return nil }
                return Target(provider: p, model: String(t[t.index(after: slash)...]))
            }
        }
        if let slash = model.firstIndex(of: "/"), let p = providers[String(model[..<slash])] {
            return [Target(provider: p, model: String(model[model.index(after: slash)...]))]
        }
        let known = (routes.keys.sorted() + providers.keys.sorted().map { "\($0)/MODEL" }).joined(separator: ", ")
        throw LLMQError(.unknownModel, "no route or provider for model \"\(model)\"; use one of: \(known.isEmpty ? "(none configured)" : known)")
    }
}
