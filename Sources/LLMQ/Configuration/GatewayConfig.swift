/// `gateway:` in the configuration: the OpenAI-compatible HTTP front of the farm (`llmq gateway`).
public struct GatewayConfig: Sendable, Codable, Equatable {
    /// Address and port the gateway listens on; it serves /metrics, /healthz and /readyz on the same port.
    public var host: String = "0.0.0.0"
    public var port: Int = 8080
    /// A file of API keys, one `KEY TENANT [MAX_CONCURRENT]` per line (`#` starts a comment). A key may be given as
    /// `sha256:HEX` so the file holds no secret. Keys are kept hashed in memory.
    public var keysFile: String?
    /// The name of an environment variable holding keys in the same form, separated by commas or newlines.
    public var keysEnv: String? = "LLMQ_GATEWAY_KEYS"
    /// Requests one tenant may have running at once across all gateways; 0 is no limit. A key's own limit wins.
    public var tenantConcurrency: Int = 0
    /// Most jobs of a mode waiting or running (pending + in-flight + delayed) before new ones get 503; 0 is no limit.
    public var maxWaiting: [Mode: Int] = [:]
    /// Limit for modes `max_waiting` does not name; 0 is no limit.
    public var maxWaitingDefault: Int = 10000
    /// Retry-After sent with a 503 from admission control, seconds.
    public var retryAfterS: Int = 1
    /// How long the gateway waits for a request's terminal event when the request does not set `timeout_s`.
    public var requestTimeoutS: Double = 600
    /// Seconds between samples of the queues' depths that admission control compares against.
    public var sampleIntervalS: Double = 0.25

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case host, port
        case keysFile = "keys_file"
        case keysEnv = "keys_env"
        case tenantConcurrency = "tenant_concurrency"
        case maxWaiting = "max_waiting"
        case maxWaitingDefault = "max_waiting_default"
        case retryAfterS = "retry_after_s"
        case requestTimeoutS = "request_timeout_s"
        case sampleIntervalS = "sample_interval_s"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GatewayConfig()
        host = try c.decodeIfPresent(String.self, forKey: .host) ?? d.host
        port = try c.decodeIfPresent(Int.self, forKey: .port) ?? d.port
        keysFile = try c.decodeIfPresent(String.self, forKey: .keysFile)
        keysEnv = try c.decodeIfPresent(String.self, forKey: .keysEnv) ?? d.keysEnv
        tenantConcurrency = try c.decodeIfPresent(Int.self, forKey: .tenantConcurrency) ?? d.tenantConcurrency
        maxWaiting = try c.decodeIfPresent([Mode: Int].self, forKey: .maxWaiting) ?? d.maxWaiting
        maxWaitingDefault = try c.decodeIfPresent(Int.self, forKey: .maxWaitingDefault) ?? d.maxWaitingDefault
        retryAfterS = try c.decodeIfPresent(Int.self, forKey: .retryAfterS) ?? d.retryAfterS
        requestTimeoutS = try c.decodeIfPresent(Double.self, forKey: .requestTimeoutS) ?? d.requestTimeoutS
        sampleIntervalS = try c.decodeIfPresent(Double.self, forKey: .sampleIntervalS) ?? d.sampleIntervalS
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !CodingKeys.allCases.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\""))
        }
    }

    /// The waiting-work limit of one mode; nil when there is none.
    public func waitingLimit(_ mode: Mode) -> Int? {
        let n = maxWaiting[mode] ?? maxWaitingDefault
        return n > 0 ? n : nil
    }

    public static func validate(_ g: GatewayConfig, source: String) throws(LLMQError) {
        func bad(_ key: String, _ why: String) -> LLMQError { .configuration("\(source): gateway.\(key) \(why)") }
        guard g.port >= 0 && g.port <= 65535 else { throw bad("port", "must be from 0 (any free port) to 65535, got \(g.port)") }
        guard !g.host.isEmpty else { throw bad("host", "must be an address such as 0.0.0.0 or 127.0.0.1") }
        guard g.tenantConcurrency >= 0 else { throw bad("tenant_concurrency", "must be 0 (no limit) or more") }
        guard g.maxWaitingDefault >= 0 else { throw bad("max_waiting_default", "must be 0 (no limit) or more") }
        for (m, n) in g.maxWaiting where n < 0 { throw bad("max_waiting.\(m)", "must be 0 (no limit) or more, got \(n)") }
        guard g.retryAfterS >= 1 else { throw bad("retry_after_s", "must be at least 1") }
        guard g.requestTimeoutS > 0 else { throw bad("request_timeout_s", "must be greater than 0") }
        guard g.sampleIntervalS > 0 && g.sampleIntervalS <= 10 else { throw bad("sample_interval_s", "must be greater than 0 and at most 10") }
    }
}
