/// The wire formats llmq speaks to upstreams.
public enum ProviderKind: String, Sendable, CaseIterable {
    /// OpenAI and every OpenAI-compatible server (vLLM, LM Studio, TGI's /v1, llama.cpp …).
    case openai
    /// The built-in simulated provider (`llmq sim`), OpenAI's wire format.
    case sim
}

/// One configured upstream. A provider turns a job into an HTTP request and
/// gives the decoder that turns the streamed answer into events.
public protocol Provider: Sendable {
    var name: String { get }
    var config: ProviderConfig { get }
    func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest
    func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder
    /// The protocol error for a failed transfer (status, body, curl error).
    func error(for result: HTTPResult) -> LLMQError
}

/// Decodes one response on the engine thread, writing events as it goes.
public protocol ResponseDecoder: StreamDecoder {
    var finishReason: String? { get }
    var usage: Usage { get }
    /// Set when the stream itself reported an error or was malformed.
    var failure: LLMQError? { get }
    /// Whether the stream reached its proper end (e.g. `[DONE]` or a finish reason).
    var complete: Bool { get }
}
