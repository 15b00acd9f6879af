/// The one error type of llmq. Its codes are the protocol's error codes, and
/// its message says what happened and, where it can, what to do about it.
public struct LLMQError: Error, Sendable, CustomStringConvertible, Equatable {
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let invalidJob = Code(rawValue: "invalid_job")
        public static let unknownModel = Code(rawValue: "unknown_model")
        public static let expired = Code(rawValue: "expired")
        public static let cancelled = Code(rawValue: "cancelled")
        public static let timeout = Code(rawValue: "timeout")
        public static let rateLimited = Code(rawValue: "rate_limited")
        public static let upstreamError = Code(rawValue: "upstream_error")
        public static let upstreamUnavailable = Code(rawValue: "upstream_unavailable")
        public static let badRequest = Code(rawValue: "bad_request")
        public static let auth = Code(rawValue: "auth")
        public static let workerLost = Code(rawValue: "worker_lost")
        public static let `internal` = Code(rawValue: "internal")
        /// Not a protocol code: configuration and start-up problems.
        public static let configuration = Code(rawValue: "configuration")
        /// Not a protocol code: Redis could not be reached or answered with an error.
        public static let redis = Code(rawValue: "redis")
    }

    public var code: Code
    public var message: String
    /// Whether pushing the job again may succeed.
    public var retryable: Bool
    /// Seconds the upstream asked us to wait (Retry-After and friends).
    public var retryAfter: Double?

    public init(_ code: Code, _ message: String, retryable: Bool = false, retryAfter: Double? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retryAfter = retryAfter
    }

    public var description: String { "\(code): \(message)" }

    public static func configuration(_ message: String) -> LLMQError { LLMQError(.configuration, message) }
    public static func redis(_ message: String) -> LLMQError { LLMQError(.redis, message, retryable: true) }
    public static func invalidJob(_ message: String) -> LLMQError { LLMQError(.invalidJob, message) }
}
