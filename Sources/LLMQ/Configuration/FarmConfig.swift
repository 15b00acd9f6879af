import Foundation

/// The whole configuration of a farm, decoded once from the file and the
/// environment, validated, then passed down explicitly.
public struct FarmConfig: Sendable, Codable, Equatable {
    public var redis: String = "redis://127.0.0.1:6379"
    public var prefix: String = "llmq"
    /// Worker processes a supervisor runs.
    public var workers: Int = 2
    /// Seconds a draining worker waits for in-flight jobs before it puts them back.
    public var drainTimeoutS: Double = 30
    public var resultTTLS: Int = 86400
    public var logTTLS: Int = 86400
    /// Largest job accepted, bytes.
    public var maxJobBytes: Int = 1 << 20
    /// Attempts a job gets when it does not say (`max_attempts`).
    public var maxAttempts: Int = 3
    public var modes: [String: ModeConfig] = FarmConfig.defaultModes
    public var providers: [String: ProviderConfig] = [:]
    public var routes: [String: [String]] = [:]
    public var logLevel: String = "info"
    public var logFormat: String = "text"
    /// Restart backoff of the supervisor, seconds (doubles per quick crash, up to the max).
    public var restartBackoffS: Double = 0.5
    public var restartBackoffMaxS: Double = 30

    public static let defaultModes: [String: ModeConfig] = [
        "chat": ModeConfig(concurrency: 64), "complete": ModeConfig(concurrency: 32), "embed": ModeConfig(concurrency: 16),
    ]

    public init() {}

    enum CodingKeys: String, CodingKey {
        case redis, prefix, workers, modes, providers, routes
        case drainTimeoutS = "drain_timeout_s"
        case resultTTLS = "result_ttl_s"
        case logTTLS = "log_ttl_s"
        case maxJobBytes = "max_job_bytes"
        case maxAttempts = "max_attempts"
        case logLevel = "log_level"
        case logFormat = "log_format"
        case restartBackoffS = "restart_backoff_s"
        case restartBackoffMaxS = "restart_backoff_max_s"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = FarmConfig()
        redis = try c.decodeIfPresent(String.self, forKey: .redis) ?? d.redis
        prefix = try c.decodeIfPresent(String.self, forKey: .prefix) ?? d.prefix
        workers = try c.decodeIfPresent(Int.self, forKey: .workers) ?? d.workers
        drainTimeoutS = try c.decodeIfPresent(Double.self, forKey: .drainTimeoutS) ?? d.drainTimeoutS
        resultTTLS = try c.decodeIfPresent(Int.self, forKey: .resultTTLS) ?? d.resultTTLS
        logTTLS = try c.decodeIfPresent(Int.self, forKey: .logTTLS) ?? d.logTTLS
        maxJobBytes = try c.decodeIfPresent(Int.self, forKey: .maxJobBytes) ?? d.maxJobBytes
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? d.maxAttempts
        modes = try c.decodeIfPresent([String: ModeConfig].self, forKey: .modes) ?? d.modes
        providers = try c.decodeIfPresent([String: ProviderConfig].self, forKey: .providers) ?? d.providers
        routes = try c.decodeIfPresent([String: [String]].self, forKey: .routes) ?? d.routes
        logLevel = try c.decodeIfPresent(String.self, forKey: .logLevel) ?? d.logLevel
        logFormat = try c.decodeIfPresent(String.self, forKey: .logFormat) ?? d.logFormat
        restartBackoffS = try c.decodeIfPresent(Double.self, forKey: .restartBackoffS) ?? d.restartBackoffS
        restartBackoffMaxS = try c.decodeIfPresent(Double.self, forKey: .restartBackoffMaxS) ?? d.restartBackoffMaxS
        let known = Set(CodingKeys.allCases)
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !known.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\""))
        }
    }
}

extension FarmConfig.CodingKeys: CaseIterable {}

public struct ModeConfig: Sendable, Codable, Equatable {
    /// Jobs of this mode one worker process runs at once.
    public var concurrency: Int

    public init(concurrency: Int) { self.concurrency = concurrency }
}

/// One upstream: a kind (wire format) and where and how to reach it.
public struct ProviderConfig: Sendable, Codable, Equatable {
    public var kind: String
    public var baseURL: String?
    public var apiKeyEnv: String?
    public var apiKeyFile: String?
    public var timeoutS: Double = 120
    public var idleTimeoutS: Double = 30
    public var connectTimeoutS: Double = 10
    /// Extra header lines sent with every request, e.g. `{"OpenAI-Organization": "org-1"}`.
    public var headers: [String: String] = [:]

    public init(kind: String, baseURL: String? = nil, apiKeyEnv: String? = nil, timeoutS: Double = 120, idleTimeoutS: Double = 30) {
        self.kind = kind
        self.baseURL = baseURL
        self.apiKeyEnv = apiKeyEnv
        self.timeoutS = timeoutS
        self.idleTimeoutS = idleTimeoutS
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, headers
        case baseURL = "base_url"
        case apiKeyEnv = "api_key_env"
        case apiKeyFile = "api_key_file"
        case timeoutS = "timeout_s"
        case idleTimeoutS = "idle_timeout_s"
        case connectTimeoutS = "connect_timeout_s"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        baseURL = try c.decodeIfPresent(String.self, forKey: .baseURL)
        apiKeyEnv = try c.decodeIfPresent(String.self, forKey: .apiKeyEnv)
        apiKeyFile = try c.decodeIfPresent(String.self, forKey: .apiKeyFile)
        timeoutS = try c.decodeIfPresent(Double.self, forKey: .timeoutS) ?? 120
        idleTimeoutS = try c.decodeIfPresent(Double.self, forKey: .idleTimeoutS) ?? 30
        connectTimeoutS = try c.decodeIfPresent(Double.self, forKey: .connectTimeoutS) ?? 10
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:]
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !CodingKeys.allCases.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\""))
        }
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
