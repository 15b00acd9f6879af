import Foundation

/// How `llmq farm` runs a provider's local engine (vLLM, Ollama, llama.cpp's
/// llama-server, TGI): the provider's `launch:` block.
///
/// One engine per host: the farm's supervisor owns it, not each worker.
public struct LaunchConfig: Sendable, Codable, Equatable {
    /// The program and its arguments; the program is looked up on PATH when it has no slash.
    public var command: [String]
    /// Added to (and overriding) the farm's environment.
    public var env: [String: String] = [:]
    /// GET must answer 2xx, and list the provider's routed models when the path ends in /v1/models or /api/tags.
    /// Default: the provider's base_url with /models (OpenAI kinds), /api/tags (ollama), /health (tgi).
    public var readyURL: String?
    /// Seconds a start may take before jobs waiting for the engine end `upstream_unavailable`.
    public var readyTimeoutS: Double = 600
    /// Started when the first job needs it rather than with the farm.
    public var lazy: Bool = false
    /// Lazy engines: seconds without a job before the engine is stopped (0: never).
    public var idleStopS: Double = 600
    /// Seconds between SIGTERM and SIGKILL when the engine is stopped.
    public var graceS: Double = 10

    public init(command: [String], env: [String: String] = [:], readyURL: String? = nil, readyTimeoutS: Double = 600,
                lazy: Bool = false, idleStopS: Double = 600, graceS: Double = 10) {
        self.command = command
        self.env = env
        self.readyURL = readyURL
        self.readyTimeoutS = readyTimeoutS
        self.lazy = lazy
        self.idleStopS = idleStopS
        self.graceS = graceS
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case command, env, lazy
        case readyURL = "ready_url"
        case readyTimeoutS = "ready_timeout_s"
        case idleStopS = "idle_stop_s"
        case graceS = "grace_s"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LaunchConfig(command: [])
        command = try c.decode([String].self, forKey: .command)
        env = try c.decodeIfPresent([String: String].self, forKey: .env) ?? d.env
        readyURL = try c.decodeIfPresent(String.self, forKey: .readyURL)
        readyTimeoutS = try c.decodeIfPresent(Double.self, forKey: .readyTimeoutS) ?? d.readyTimeoutS
        lazy = try c.decodeIfPresent(Bool.self, forKey: .lazy) ?? d.lazy
        idleStopS = try c.decodeIfPresent(Double.self, forKey: .idleStopS) ?? d.idleStopS
        graceS = try c.decodeIfPresent(Double.self, forKey: .graceS) ?? d.graceS
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !CodingKeys.allCases.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\""))
        }
    }

    /// The URL the supervisor probes for provider `p`.
    public static func readyURL(for p: ProviderConfig) -> String? {
        if let u = p.launch?.readyURL { return u }
        guard let kind = ProviderKind(rawValue: p.kind) else { return nil }
        var base: String
        if let b = p.baseURL {
            base = b
        } else if kind == .ollama {
            base = OllamaProvider.defaultBaseURL
        } else if kind.isOpenAIFamily && kind != .azure && kind != .openai {
            base = OpenAIPreset(kind: kind, config: p).defaultBaseURL
        } else {
            return nil
        }
        while base.hasSuffix("/") { base.removeLast() }
        switch kind {
        case .ollama: return (base.hasSuffix("/api") ? String(base.dropLast(4)) : base) + "/api/tags"
        case .tgi: return base + "/health"
        default: return base + "/models"
        }
    }

    /// The models a ready engine must list: the ones routes send to `provider`.
    public static func models(of provider: String, in config: FarmConfig) -> [String] {
        var out = Set<String>()
        for targets in config.routes.values {
            for t in targets where t.hasPrefix(provider + "/") { out.insert(String(t.dropFirst(provider.count + 1))) }
        }
        return out.sorted()
    }

    static func validate(_ key: String, _ l: LaunchConfig, provider p: ProviderConfig, bad: @escaping (String, String) -> LLMQError) throws(LLMQError) {
        let check = ConfigLoader.RangeCheck(bad: bad)
        guard let program = l.command.first, !program.isEmpty else {
            throw bad("\(key).command", "must list the program and its arguments, e.g. [vllm, serve, MODEL, --port, \"8000\"]")
        }
        guard ChildProcess.which(program) != nil else {
            throw bad("\(key).command", "names \(program), which is not an executable file nor on PATH; install it or give its full path")
        }
        guard let url = readyURL(for: p) else {
            throw bad("\(key).ready_url", "is needed when the provider has no base_url")
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw bad("\(key).ready_url", "must start with http:// or https://, got \(url)")
        }
        try check.double("\(key).ready_timeout_s", l.readyTimeoutS, 0.1...86_400, unit: "seconds")
        try check.double("\(key).idle_stop_s", l.idleStopS, 0...31_536_000, unit: "seconds (0: never)")
        try check.double("\(key).grace_s", l.graceS, 0...3600, unit: "seconds")
    }
}
