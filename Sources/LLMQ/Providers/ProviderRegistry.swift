import Foundation

/// The configured providers and routes; resolves a job's `model` to an
/// ordered list of targets to try.
public struct ProviderRegistry: Sendable {
    public struct Target: Sendable {
        public var provider: any Provider
        public var model: String
    }

    public let providers: [String: any Provider]
    public let routes: [String: [String]]

    public init(config: FarmConfig, environment: [String: String] = ProcessInfo.processInfo.environment) throws(LLMQError) {
        var built: [String: any Provider] = [:]
        for (name, p) in config.providers {
            let key = try Self.apiKey(name: name, config: p, environment: environment)
            guard let kind = ProviderKind(rawValue: p.kind) else {
                throw .configuration("providers.\(name).kind \"\(p.kind)\" is unknown")
            }
            switch kind {
            case .openai, .sim: built[name] = OpenAIProvider(name: name, config: p, apiKey: key)
            }
        }
        providers = built
        routes = config.routes
        secrets = config.providers.compactMap { name, p in try? Self.apiKey(name: name, config: p, environment: environment) }
            .filter { $0.count >= 4 }
    }

    /// The API keys in use, so that no message that leaves llmq can carry one.
    let secrets: [String]

    /// `text` with every configured API key replaced.
    public func redact(_ text: String) -> String {
        secrets.reduce(text) { $0.replacingOccurrences(of: $1, with: "[redacted]") }
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
