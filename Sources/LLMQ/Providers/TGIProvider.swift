import Foundation

/// Hugging Face text-generation-inference. Complete jobs use `/generate_stream`
/// (SSE of `{token: {text, special}, details: {finish_reason, generated_tokens}}`,
/// JSON output through `parameters.grammar`); chat jobs use TGI's Messages API
/// under `/v1`, which applies the model's chat template and speaks OpenAI's
/// format (tools included). TGI has no embeddings (that is TEI, an OpenAI-compatible server).
public struct TGIProvider: Provider {
    public let endpoint: ProviderEndpoint
    let messagesAPI: OpenAIProvider

    public static let defaultBaseURL = "http://127.0.0.1:8080"

    public init(name: String, config: ProviderConfig, apiKey: String?) {
        let base = trimmedBaseURL(config.baseURL, default: Self.defaultBaseURL, dropping: ["/v1"])
        endpoint = ProviderEndpoint(name: name, config: config, baseURL: base, apiKey: apiKey, authHeaders: keyHeader(apiKey))
        messagesAPI = OpenAIProvider(name: name, config: config, apiKey: apiKey, baseURL: base + "/v1")
    }

    public func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest {
        switch job.mode {
        case .embed:
            throw LLMQError(.badRequest, "\(name) (tgi) has no embeddings; serve them with text-embeddings-inference as kind openai")
        case .complete:
            if job.params.tools != nil { throw LLMQError(.badRequest, "\(name) (tgi) takes tools in chat jobs only (its /v1 Messages API)") }
            let chat = try ChatRequest(job: job, provider: name)
            var parameters: [String: JSONValue] = ["details": true]
            let p = job.params
            if let v = maxTokens(job) { parameters["max_new_tokens"] = .int(v) }
            // TGI refuses temperature 0; leaving it out is greedy decoding, which is what 0 means.
            if let v = p.temperature, v > 0 { parameters["temperature"] = .double(v) }
            if let v = p.topP, v > 0, v < 1 { parameters["top_p"] = .double(v) }
            if let v = p.stop { parameters["stop"] = .array(v.map { .string($0) }) }
            if let v = p.seed { parameters["seed"] = .int(v) }
            switch chat.output {
            case nil, .text?: break
            case .jsonObject?: parameters["grammar"] = ["type": "json", "value": ["type": "object"]]
            case .jsonSchema(_, let schema, _)?: parameters["grammar"] = ["type": "json", "value": schema]
            }
            p.mergeExtra(into: &parameters)
            let body: JSONValue = ["inputs": .string(job.prompt ?? ""), "parameters": .object(parameters)]
            return jsonRequest(url: baseURL + "/generate_stream", body: body, auth: authHeaders, job: job, timeout: timeout, streaming: true)
        default:
            var (path, body) = try messagesAPI.body(job: job, model: model)
            // TGI's Messages API takes a JSON Schema as response_format {type: json_object, value: SCHEMA}.
            switch try ChatRequest(job: job, provider: name).output {
            case .jsonSchema(_, let schema, _)?: body["response_format"] = ["type": "json_object", "value": schema]
            case .jsonObject?: body["response_format"] = ["type": "json_object", "value": ["type": "object"]]
            default: break
            }
            return jsonRequest(url: baseURL + "/v1" + path, body: .object(body), auth: authHeaders, job: job, timeout: timeout, streaming: true)
        }
    }

    public func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder {
        job.mode == .complete ? TGIStreamDecoder(writer: writer, provider: name) : messagesAPI.makeDecoder(job: job, writer: writer)
    }

    /// TGI serves one model; `/info` names it.
    public func modelsRequest() -> HTTPRequest? { getRequest(url: baseURL + "/info", auth: authHeaders) }

    public func modelNames(from body: [UInt8]) -> [String] {
        [(try? JSONValue.parse(body))?["model_id"]?.stringValue].compactMap { $0 }
    }

    static func finishReason(_ raw: String) -> String {
        raw == "length" ? "length" : "stop"  // eos_token, stop_sequence
    }
}

/// Decodes `/generate_stream`: one token per event, `details` on the last.
///
/// Thread rules: engine thread only (see `EventWriter`).
final class TGIStreamDecoder: StreamEventDecoder {
    override class var streamEnd: String { "its details" }

    override func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        let s = JSONScanner(data)
        guard let top = s.validate(), s.isObject(top) else { return malformed(data) }
        if let e = s.member(top, "error") {
            let type = s.member(top, "error_type").flatMap(s.string) ?? "error"
            let code: LLMQError.Code = type == "overloaded" ? .upstreamUnavailable : type == "validation" ? .badRequest : .upstreamError
            failed = LLMQError(code, "\(provider) reported an error mid-stream (\(type)): \(s.string(e) ?? "no message")", retryable: code != .badRequest)
            return false
        }
        if let token = s.member(top, "token"), s.isObject(token) {
            let special = s.member(token, "special").map { s.bytes[$0.lowerBound] == UInt8(ascii: "t") } ?? false
            if !special, let t = s.member(token, "text").flatMap(s.stringBody) { writer.chunk(escaped: t) }
        }
        if let d = s.member(top, "details"), s.isObject(d) {
            finishReason = TGIProvider.finishReason(s.member(d, "finish_reason").flatMap(s.string) ?? "eos_token")
            usage.completionTokens = s.member(d, "generated_tokens").flatMap(s.count)
            usage.promptTokens = s.member(d, "input_length").flatMap(s.count)
            complete = true
        }
        return true
    }
}
