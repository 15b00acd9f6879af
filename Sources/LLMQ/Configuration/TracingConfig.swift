/// `tracing:` in the configuration. Off unless `otlp_endpoint` is set (or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); then every job's spans go to that OTLP/HTTP
/// receiver as JSON (`POST ENDPOINT/v1/traces`).
public struct TracingConfig: Sendable, Codable, Equatable {
    /// Base URL of an OTLP/HTTP receiver, such as `http://otel-collector:4318`; nil turns tracing off.
    public var otlpEndpoint: String?
    /// `service.name` of the spans.
    public var serviceName: String = "llmq"
    /// Share of jobs without a traceparent that start a trace; jobs with one follow its sampled flag.
    public var sampleRatio: Double = 1
    /// Extra request headers, e.g. an API key of a hosted backend.
    public var headers: [String: String] = [:]
    /// Longest time one export request may take.
    public var timeoutS: Double = 5

    public init(otlpEndpoint: String? = nil) { self.otlpEndpoint = otlpEndpoint }

    public var isEnabled: Bool { otlpEndpoint.map { !$0.isEmpty } ?? false }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case headers
        case otlpEndpoint = "otlp_endpoint"
        case serviceName = "service_name"
        case sampleRatio = "sample_ratio"
        case timeoutS = "timeout_s"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TracingConfig()
        otlpEndpoint = try c.decodeIfPresent(String.self, forKey: .otlpEndpoint)
        serviceName = try c.decodeIfPresent(String.self, forKey: .serviceName) ?? d.serviceName
        sampleRatio = try c.decodeIfPresent(Double.self, forKey: .sampleRatio) ?? d.sampleRatio
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers) ?? d.headers
        timeoutS = try c.decodeIfPresent(Double.self, forKey: .timeoutS) ?? d.timeoutS
        let extra = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter { k in !CodingKeys.allCases.contains(where: { $0.rawValue == k }) }
        if let k = extra.sorted().first {
            throw DecodingError.dataCorrupted(.init(codingPath: [AnyKey(k)], debugDescription: "unknown key \"\(k)\""))
        }
    }

    static func validate(_ t: TracingConfig, bad: (String, String) -> LLMQError) throws(LLMQError) {
        if let e = t.otlpEndpoint, !e.isEmpty, !(e.hasPrefix("http://") || e.hasPrefix("https://")) {
            throw bad("tracing.otlp_endpoint", "must start with http:// or https://, got \(e)")
        }
        guard t.sampleRatio >= 0 && t.sampleRatio <= 1 else { throw bad("tracing.sample_ratio", "must be from 0 to 1, got \(t.sampleRatio)") }
        guard t.timeoutS.isFinite, t.timeoutS > 0, t.timeoutS <= 300 else {
            throw bad("tracing.timeout_s", "must be a number of seconds greater than 0 and at most 300, got \(t.timeoutS)")
        }
        guard !t.serviceName.isEmpty else { throw bad("tracing.service_name", "must not be empty") }
    }
}
