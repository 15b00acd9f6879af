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
    /// Largest answer a job may produce, bytes.
    public var maxOutputBytes: Int = 4 << 20
    /// Backoff between attempts: first delay and cap, seconds (full jitter, Retry-After honoured).
    public var retryBaseS: Double = 0.25
    public var retryMaxS: Double = 10
    public var modes: [Mode: ModeConfig] = FarmConfig.defaultModes
    public var providers: [String: ProviderConfig] = [:]
    public var routes: [String: [String]] = [:]
    public var logLevel: String = "info"
    public var logFormat: String = "text"
    /// Restart backoff of the supervisor, seconds (doubles per quick crash, up to the max).
    public var restartBackoffS: Double = 0.5
    public var restartBackoffMaxS: Double = 30
    /// Port of /metrics, /healthz and /readyz (`llmq farm`; `llmq worker` takes `--http-port`); 0 turns them off.
    public var httpPort: Int = 9464
    /// Address they listen on.
    public var httpHost: String = "0.0.0.0"
    public var tracing: TracingConfig = TracingConfig()
    /// Due jobs one worker moves from a mode's delayed set to its queue at a time (1-10000).
    public var delayedBatch: Int = 100
    /// Seconds a worker's lease (heartbeat) lives without renewal before other workers reap its jobs (1-300).
    public var leaseTTLS: Double = 5
    /// Threads of each worker's HTTP engine (1-16): more start a burst of thousands of new streams faster, given cores.
    public var httpThreads: Int = 1
    public var gateway: GatewayConfig = GatewayConfig()
    /// `embed_cache` of the routes written as `{targets, embed_cache}`, by route name.
    public var routeEmbedCaches: [String: EmbedCacheConfig] = [:]
    /// `replica`: a job is acknowledged only once a replica confirmed its terminal write (WAIT); `none` does not wait.
    public var durability: String = "none"
    // Scheduling (README "Tenants and priorities").
    /// Tenants of `schedule: fair` modes with their weight and limit.
    public var tenants: [String: TenantConfig] = [:]
    /// What an unlisted tenant (and a job without one) gets.
    public var tenantDefault: TenantConfig = TenantConfig()
    /// Request channels: `sharded` (SPUBLISH) or `classic` (PUBLISH); nil: sharded on a cluster, classic otherwise.
    public var pubsub: PubSub?

    public static let defaultModes: [Mode: ModeConfig] = [
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
        case maxOutputBytes = "max_output_bytes"
        case retryBaseS = "retry_base_s"
        case retryMaxS = "retry_max_s"
        case logLevel = "log_level"
        case logFormat = "log_format"
        case restartBackoffS = "restart_backoff_s"
        case restartBackoffMaxS = "restart_backoff_max_s"
        case httpPort = "http_port"
        case httpHost = "http_host"
        case tracing, gateway
        case delayedBatch = "delayed_batch"
        case leaseTTLS = "lease_ttl_s"
        case httpThreads = "http_threads"
        case durability
        case tenants
        case tenantDefault = "tenant_default"
        case pubsub
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
        maxOutputBytes = try c.decodeIfPresent(Int.self, forKey: .maxOutputBytes) ?? d.maxOutputBytes
        retryBaseS = try c.decodeIfPresent(Double.self, forKey: .retryBaseS) ?? d.retryBaseS
        retryMaxS = try c.decodeIfPresent(Double.self, forKey: .retryMaxS) ?? d.retryMaxS
        modes = try c.decodeIfPresent([Mode: ModeConfig].self, forKey: .modes) ?? d.modes
        providers = try c.decodeIfPresent([String: ProviderConfig].self, forKey: .providers) ?? d.providers
        let routeSpecs = try c.decodeIfPresent([String: RouteSpec].self, forKey: .routes)
        routes = routeSpecs?.mapValues(\.targets) ?? d.routes
        routeEmbedCaches = routeSpecs?.compactMapValues(\.embedCache) ?? [:]
        logLevel = try c.decodeIfPresent(String.self, forKey: .logLevel) ?? d.logLevel
        logFormat = try c.decodeIfPresent(String.self, forKey: .logFormat) ?? d.logFormat
        restartBackoffS = try c.decodeIfPresent(Double.self, forKey: .restartBackoffS) ?? d.restartBackoffS
        restartBackoffMaxS = try c.decodeIfPresent(Double.self, forKey: .restartBackoffMaxS) ?? d.restartBackoffMaxS
        httpPort = try c.decodeIfPresent(Int.self, forKey: .httpPort) ?? d.httpPort
        httpHost = try c.decodeIfPresent(String.self, forKey: .httpHost) ?? d.httpHost
        tracing = try c.decodeIfPresent(TracingConfig.self, forKey: .tracing) ?? d.tracing
        delayedBatch = try c.decodeIfPresent(Int.self, forKey: .delayedBatch) ?? d.delayedBatch
        leaseTTLS = try c.decodeIfPresent(Double.self, forKey: .leaseTTLS) ?? d.leaseTTLS
        httpThreads = try c.decodeIfPresent(Int.self, forKey: .httpThreads) ?? d.httpThreads
        gateway = try c.decodeIfPresent(GatewayConfig.self, forKey: .gateway) ?? d.gateway
        durability = try c.decodeIfPresent(String.self, forKey: .durability) ?? d.durability
        tenants = try c.decodeIfPresent([String: TenantConfig].self, forKey: .tenants) ?? d.tenants
        tenantDefault = try c.decodeIfPresent(TenantConfig.self, forKey: .tenantDefault) ?? d.tenantDefault
        pubsub = try c.decodeIfPresent(PubSub.self, forKey: .pubsub)
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
    /// Hash tags the mode's queue is spread over (`{MODE~0}` … `{MODE~K-1}`); 1 keeps the single `{MODE}` family.
    public var shards: Int = 1
    /// `fifo` (the queue's order, fastest) or `fair` (priorities, then weighted round robin over tenants with limits).
    public var schedule: Schedule = .fifo

    public enum Schedule: String, Sendable, Codable, Equatable {
        case fifo, fair
    }

    public init(concurrency: Int, shards: Int = 1, schedule: Schedule = .fifo) {
        self.concurrency = concurrency
        self.shards = shards
        self.schedule = schedule
    }

    enum CodingKeys: String, CodingKey { case concurrency, shards, schedule }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        concurrency = try c.decode(Int.self, forKey: .concurrency)
        shards = try c.decodeIfPresent(Int.self, forKey: .shards) ?? 1
        schedule = try c.decodeIfPresent(Schedule.self, forKey: .schedule) ?? .fifo
    }
}

/// A tenant's share of a `schedule: fair` mode: its weight in the round robin and its running jobs across the farm.
public struct TenantConfig: Sendable, Codable, Equatable {
    /// Jobs the tenant is served in a row when its turn comes (1-1000).
    public var weight: Int = 1
    /// Jobs of the tenant running at once across the farm, per key family; 0 is no limit.
    public var maxConcurrent: Int = 0

    public init(weight: Int = 1, maxConcurrent: Int = 0) {
        self.weight = weight
        self.maxConcurrent = maxConcurrent
    }

    enum CodingKeys: String, CodingKey {
        case weight
        case maxConcurrent = "max_concurrent"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        weight = try c.decodeIfPresent(Int.self, forKey: .weight) ?? 1
        maxConcurrent = try c.decodeIfPresent(Int.self, forKey: .maxConcurrent) ?? 0
    }
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
    /// Azure's `api-version` query parameter, or Anthropic's `anthropic-version` header.
    public var apiVersion: String?
    /// Azure: the deployment to call when it differs from the route's model name.
    public var deployment: String?
    /// max_tokens for jobs that do not say (Anthropic requires one; 4096 when unset there).
    public var maxTokens: Int?
    /// Upstream requests one worker process runs at once to this provider; nil is unlimited.
    public var maxConcurrency: Int?
    /// Farm-wide pause after a 429 without a Retry-After hint, or after repeated failures; 0 turns the shared cooldown off
    /// (the default for kind sim).
    public var cooldownS: Double = 5
    /// Longest farm-wide pause, whatever the provider's Retry-After or reset headers say.
    public var cooldownMaxS: Double = 60
    /// Consecutive failures (5xx, connect errors, timeouts), counted across the farm, that start a cooldown; 0 never.
    public var failuresBeforeCooldown: Int = 5
    /// Embed jobs of this provider answered from the farm's cache in Redis; nil: off.
    public var embedCache: EmbedCacheConfig?
    /// A local engine the farm starts and supervises for this provider (see `LaunchConfig`).
    public var launch: LaunchConfig?

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
        case apiVersion = "api_version"
        case deployment
        case maxTokens = "max_tokens"
        case maxConcurrency = "max_concurrency"
        case cooldownS = "cooldown_s"
        case cooldownMaxS = "cooldown_max_s"
        case failuresBeforeCooldown = "failures_before_cooldown"
        case embedCache = "embed_cache"
        case launch
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
        apiVersion = try c.decodeIfPresent(String.self, forKey: .apiVersion)
        deployment = try c.decodeIfPresent(String.self, forKey: .deployment)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        maxConcurrency = try c.decodeIfPresent(Int.self, forKey: .maxConcurrency)
        // The sim's model names script each request (fault=429 for one, tokens=3 for the next), so one
        // scripted 429 must not cool the others down: off unless asked for.
        cooldownS = try c.decodeIfPresent(Double.self, forKey: .cooldownS) ?? (kind == ProviderKind.sim.rawValue ? 0 : 5)
        cooldownMaxS = try c.decodeIfPresent(Double.self, forKey: .cooldownMaxS) ?? 60
        failuresBeforeCooldown = try c.decodeIfPresent(Int.self, forKey: .failuresBeforeCooldown) ?? 5
        embedCache = try c.decodeIfPresent(EmbedCacheConfig.self, forKey: .embedCache)
        launch = try c.decodeIfPresent(LaunchConfig.self, forKey: .launch)
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
