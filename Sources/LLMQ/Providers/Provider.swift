import Foundation

/// The wire formats llmq speaks to upstreams.
public enum ProviderKind: String, Sendable, CaseIterable {
    /// OpenAI and every OpenAI-compatible server (vLLM, LM Studio, TGI's /v1, llama.cpp …).
    case openai
    /// The built-in simulated provider (`llmq sim`), OpenAI's wire format.
    case sim
    /// Presets of `openai`: Azure OpenAI (api-key header, deployment path, api-version),
    /// vLLM, LM Studio and llama.cpp's server (local defaults, no key needed).
    case azure, vllm, lmstudio, llamacpp
    /// Anthropic's Messages API.
    case anthropic
    /// Google's Gemini API (generateContent / streamGenerateContent).
    case gemini
    /// Cohere's v2 API.
    case cohere
    /// Ollama's native API (/api/chat, /api/generate, /api/embed).
    case ollama
    /// Hugging Face text-generation-inference (/generate_stream; chat via its /v1 Messages API).
    case tgi

    /// Whether the kind speaks OpenAI's wire format (and so is built by `OpenAIProvider`).
    public var isOpenAIFamily: Bool {
        switch self {
        case .openai, .sim, .azure, .vllm, .lmstudio, .llamacpp: true
        default: false
        }
    }

    /// Whether the service behind the kind's default address refuses requests without a key.
    /// A configured `base_url` (a proxy, a private gateway) lifts the requirement.
    public var needsKeyByDefault: Bool {
        switch self {
        case .anthropic, .gemini, .cohere, .azure: true
        default: false
        }
    }
}

/// What every provider holds, whatever its wire format: the name it is configured
/// under, its configuration, the API root, the key and the header lines that carry it.
public struct ProviderEndpoint: Sendable {
    public let name: String
    public let config: ProviderConfig
    /// The API root without trailing slashes or the version suffixes the provider adds itself.
    public let baseURL: String
    /// The key; kept out of every message by `ProviderRegistry.redact`, never logged.
    let apiKey: String?
    /// The header lines that authenticate a request (key, and an API version where one is required).
    public let authHeaders: [String]

    public init(name: String, config: ProviderConfig, baseURL: String, apiKey: String?, authHeaders: [String]) {
        self.name = name
        self.config = config
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.authHeaders = authHeaders
    }
}

/// One configured upstream. A provider turns a job into an HTTP request and
/// gives the decoder that turns the streamed answer into events.
///
/// ## Implementation requirements
///
/// - **Threads.** A provider is an immutable value shared by every job of a worker:
///   `makeRequest`, `makeDecoder`, `error(for:)` and the model-list calls run on any
///   task, concurrently, and must not keep state between calls. The decoder it makes
///   belongs to one transfer and runs on the HTTP engine's thread only (`consume`,
///   then `finish` once the body ended normally); the job's task reads its
///   `failure`, `usage`, `finishReason` and `complete` after `perform` returned.
/// - **Bounds.** A decoder holds at most one line or event (1 MiB, `SSEParser`,
///   `NDJSONParser`) or, for whole-JSON answers, a capped body; numbers from the
///   upstream are clamped (`Usage.clamped`, `JSONScanner.count`/`index`) and never
///   trap; indexes outside what the job asked for fail the stream as `upstream_error`.
/// - **Output.** Text and tool-call pieces go to the `EventWriter` still JSON-escaped,
///   as the upstream sent them; the writer counts them against `max_output_bytes`.
/// - **complete.** `complete` is true only when the stream reached its proper end
///   (`[DONE]`, `message_stop`, a finish reason, `done: true`, a whole JSON answer
///   read). A body that ended without it is a failure (`upstream_error`, retryable),
///   never a `done`.
/// - **Errors.** `failure` (set by the decoder) wins over `error(for:)` (the
///   transfer's status, headers and transport failure). Retry hints are clamped by
///   `UpstreamError`. Neither redacts: messages may quote the provider, and the
///   provider may echo the key; `ProviderRegistry.redact` is the one place keys are
///   removed, where text leaves the process (events, results, logs, CLI output).
public protocol Provider: Sendable {
    var endpoint: ProviderEndpoint { get }
    func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest
    func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder
    /// The protocol error for a failed transfer (status, body, transport failure);
    /// `defaultError(for:)` unless the provider knows better.
    func error(for result: HTTPResult) -> LLMQError
    /// The request that lists the upstream's models, when it has such a call.
    func modelsRequest() -> HTTPRequest?
    /// Model names from the answer to `modelsRequest()`.
    func modelNames(from body: [UInt8]) -> [String]
}

/// Decodes one response on the engine thread, writing events as it goes.
public protocol ResponseDecoder: StreamDecoder {
    var finishReason: String? { get }
    var usage: Usage { get }
    /// Set when the stream itself reported an error, was malformed or broke a cap.
    var failure: LLMQError? { get }
    /// Whether the stream reached its proper end (e.g. `[DONE]` or a finish reason).
    var complete: Bool { get }
}

extension Provider {
    public var name: String { endpoint.name }
    public var config: ProviderConfig { endpoint.config }
    var baseURL: String { endpoint.baseURL }
    var authHeaders: [String] { endpoint.authHeaders }

    public func modelsRequest() -> HTTPRequest? { nil }
    public func modelNames(from body: [UInt8]) -> [String] { [] }
    public func error(for result: HTTPResult) -> LLMQError { defaultError(for: result) }

    /// The shared mapping of a failed transfer to a protocol error (see `UpstreamError`).
    public func defaultError(for result: HTTPResult) -> LLMQError {
        UpstreamError.classify(result, provider: name, timeout: config.timeoutS, idleTimeout: config.idleTimeoutS)
    }

    /// A JSON POST with the provider's timeouts, extra headers and the job's trace context.
    func jsonRequest(url: String, body: JSONValue, auth: [String], job: Job?, timeout: Double?, streaming: Bool,
                     accept: String? = nil) -> HTTPRequest {
        var headers = ["Content-Type: application/json", "Accept: \(accept ?? (streaming ? "text/event-stream" : "application/json"))"]
        headers += auth
        for (k, v) in config.headers.sorted(by: { $0.key < $1.key }) { headers.append("\(k): \(v)") }
        if let tp = job?.traceparent { headers.append("traceparent: \(tp)") }
        return HTTPRequest(
            url: url, headers: headers, body: body.jsonBytes,
            timeout: min(timeout ?? config.timeoutS, config.timeoutS), idleTimeout: config.idleTimeoutS,
            connectTimeout: config.connectTimeoutS)
    }

    /// A GET of a small JSON answer (model lists).
    func getRequest(url: String, auth: [String]) -> HTTPRequest {
        var headers = ["Accept: application/json"] + auth
        for (k, v) in config.headers.sorted(by: { $0.key < $1.key }) { headers.append("\(k): \(v)") }
        return HTTPRequest(method: "GET", url: url, headers: headers, timeout: min(30, config.timeoutS),
                           idleTimeout: config.idleTimeoutS, connectTimeout: config.connectTimeoutS)
    }

    /// The provider's config'd max_tokens, or the job's.
    func maxTokens(_ job: Job) -> Int? { job.params.maxTokens ?? config.maxTokens }
}

/// A base URL as configured, or the kind's default, without trailing slashes.
/// The configured API root (or the default) without trailing slashes and
/// without the version suffixes a provider adds itself, in the order given.
func trimmedBaseURL(_ configured: String?, default fallback: String, dropping suffixes: [String] = []) -> String {
    var base = configured ?? fallback
    while base.hasSuffix("/") { base.removeLast() }
    for suffix in suffixes where base.hasSuffix(suffix) { base.removeLast(suffix.count) }
    return base
}

/// The header line carrying an API key, `NAME: SCHEME KEY`; none when no key is configured.
func keyHeader(_ apiKey: String?, name: String = "Authorization", scheme: String = "Bearer ") -> [String] {
    guard let apiKey, !apiKey.isEmpty else { return [] }
    return ["\(name): \(scheme)\(apiKey)"]
}

/// Percent-encodes a model or deployment name for use as one path segment.
func pathSegment(_ s: String) -> String {
    // Keeps what RFC 3986 allows in a segment (so `gemini-2.0-flash` and `llama3:8b` stay readable).
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~!$&'()*+,;=:@")
    return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
}
