import Foundation

/// OpenAI's API and every server that speaks it: `/chat/completions` and
/// `/completions` streamed as SSE with usage, `/embeddings` as one JSON answer.
///
/// Kinds `azure`, `vllm`, `lmstudio` and `llamacpp` are presets of it (see `OpenAIPreset`):
/// the same wire format with another default address, auth header or path.
public struct OpenAIProvider: Provider {
    public let endpoint: ProviderEndpoint
    let preset: OpenAIPreset

    public static let defaultBaseURL = "https://api.openai.com/v1"
    public static let defaultSimURL = "http://127.0.0.1:8089/v1"

    public init(name: String, config: ProviderConfig, apiKey: String?) {
        let preset = OpenAIPreset(kind: ProviderKind(rawValue: config.kind) ?? .openai, config: config)
        self.preset = preset
        endpoint = ProviderEndpoint(name: name, config: config, baseURL: preset.baseURL(configured: config.baseURL), apiKey: apiKey,
                                    authHeaders: preset.authHeaders(apiKey: apiKey))
    }

    /// For servers reached under another provider kind (TGI's Messages API).
    init(name: String, config: ProviderConfig, apiKey: String?, baseURL: String) {
        preset = OpenAIPreset(kind: .openai, config: config)
        endpoint = ProviderEndpoint(name: name, config: config, baseURL: trimmedBaseURL(baseURL, default: baseURL), apiKey: apiKey,
                                    authHeaders: preset.authHeaders(apiKey: apiKey))
    }

    public func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest {
        let (path, body) = try self.body(job: job, model: model)
        return jsonRequest(url: preset.url(base: baseURL, path: path, model: model), body: .object(body), auth: authHeaders,
                           job: job, timeout: timeout, streaming: job.mode != .embed)
    }

    /// The endpoint path and the JSON body for a job.
    func body(job: Job, model: String) throws(LLMQError) -> (String, [String: JSONValue]) {
        var body: [String: JSONValue] = ["model": .string(model)]
        let path: String
        switch job.mode {
        case .embed:
            path = "/embeddings"
            body["input"] = .array(job.input.map { .string($0) })
        case .complete:
            path = "/completions"
            body["prompt"] = .string(job.prompt ?? "")
            body["stream"] = true
            body["stream_options"] = ["include_usage": true]
        default:
            path = "/chat/completions"
            body["messages"] = .array(job.messages)
            body["stream"] = true
            body["stream_options"] = ["include_usage": true]
        }
        let p = job.params
        if job.mode != .embed {
            if let v = maxTokens(job) { body["max_tokens"] = .int(v) }
            if let v = p.temperature { body["temperature"] = .double(v) }
            if let v = p.topP { body["top_p"] = .double(v) }
            if let v = p.stop { body["stop"] = .array(v.map { .string($0) }) }
            if let v = p.seed { body["seed"] = .int(v) }
            if let v = p.responseFormat { body["response_format"] = v }
            if let v = p.tools {
                guard job.mode == .chat else { throw LLMQError(.badRequest, "params.tools needs a chat job") }
                body["tools"] = v
            }
            if let v = p.toolChoice { body["tool_choice"] = v }
        }
        p.mergeExtra(into: &body)
        return (path, body)
    }

    public func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder {
        job.mode == .embed
            ? OpenAIEmbeddingDecoder(writer: writer, provider: name, inputs: job.input.count)
            : OpenAIStreamDecoder(writer: writer, provider: name)
    }

    public func modelsRequest() -> HTTPRequest? {
        preset.kind == .azure ? nil : getRequest(url: baseURL + "/models", auth: authHeaders)
    }

    public func modelNames(from body: [UInt8]) -> [String] {
        ((try? JSONValue.parse(body))?["data"]?.arrayValue ?? []).compactMap { $0["id"]?.stringValue }
    }
}

/// Decodes OpenAI `chat.completion.chunk` / `text_completion` SSE streams.
///
/// Thread rules: engine thread only (see `EventWriter`).
public final class OpenAIStreamDecoder: StreamEventDecoder {
    override class var streamEnd: String { "it finished" }
    /// A stream that gave a finish_reason but no `[DONE]` still finished.
    override var completeWithoutEnd: Bool { finishReason != nil }

    override func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        if data.count == 6 && data.elementsEqual("[DONE]".utf8) {
            complete = true
            return true
        }
        let s = JSONScanner(data)
        guard let top = s.validate(), s.isObject(top) else { return malformed(data) }
        var choices: Range<Int>?
        var usageRange: Range<Int>?
        var errorRange: Range<Int>?
        s.forEachMember(top) { k, v in
            if s.equals(k, "choices") { choices = v } else if s.equals(k, "usage") { usageRange = v } else if s.equals(k, "error") { errorRange = v }
        }
        if let errorRange {
            let message = s.isObject(errorRange) ? s.member(errorRange, "message").flatMap(s.string) : s.string(errorRange)
            failed = LLMQError(.upstreamError, "\(provider) reported an error mid-stream: \(message ?? "no message")", retryable: true)
            return false
        }
        if let choices, s.isArray(choices) {
            s.forEachElement(choices) { _, choice in
                guard s.isObject(choice) else { return }
                s.forEachMember(choice) { k, v in
                    if s.equals(k, "delta") && s.isObject(v) {
                        self.delta(s, v)
                    } else if s.equals(k, "text") {
                        if let t = s.stringBody(v) { writer.chunk(escaped: t) }
                    } else if s.equals(k, "finish_reason") && !s.isNull(v) {
                        finishReason = s.string(v)
                    }
                }
            }
        }
        if failed != nil { return false }  // a bad tool-call index
        if let usageRange, s.isObject(usageRange) {
            if let p = s.member(usageRange, "prompt_tokens").flatMap(s.count) { usage.promptTokens = p }
            if let c = s.member(usageRange, "completion_tokens").flatMap(s.count) { usage.completionTokens = c }
        }
        return true
    }

    private func delta(_ s: JSONScanner, _ d: Range<Int>) {
        s.forEachMember(d) { k, v in
            if s.equals(k, "content") {
                if let t = s.stringBody(v) { writer.chunk(escaped: t) }
            } else if s.equals(k, "tool_calls") && s.isArray(v) {
                s.forEachElement(v) { _, call in
                    guard s.isObject(call), let index = blockIndex(s, s.member(call, "index")) else { return }
                    let id = s.member(call, "id").flatMap(s.string)
                    var name: String?
                    var args = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
                    if let f = s.member(call, "function"), s.isObject(f) {
                        name = s.member(f, "name").flatMap(s.string)
                        if let a = s.member(f, "arguments").flatMap(s.stringBody) { args = a }
                    }
                    writer.toolCall(index: index, callID: id, name: name, argumentsEscaped: args)
                }
            }
        }
    }
}

/// Decodes OpenAI's `/embeddings` answer into one `embedding` event per input.
public final class OpenAIEmbeddingDecoder: ResponseDecoder {
    let writer: EventWriter
    let provider: String
    /// How many inputs the job sent: every `index` must name one of them.
    let inputs: Int
    var body: [UInt8] = []
    public private(set) var finishReason: String?
    public private(set) var usage = Usage()
    public private(set) var failure: LLMQError?
    public private(set) var complete = false

    public init(writer: EventWriter, provider: String, inputs: Int) {
        self.writer = writer
        self.provider = provider
        self.inputs = inputs
    }

    public func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        body.append(contentsOf: bytes)
        if body.count < JSONBodyDecoder.limit { return true }
        failure = LLMQError(.upstreamError, "\(provider) sent an answer over \(JSONBodyDecoder.limit >> 20) MiB", retryable: false)
        return false
    }

    public func finish() {
        body.withUnsafeBufferPointer { b in
            let s = JSONScanner(b)
            guard let top = s.validate(), s.isObject(top), let data = s.member(top, "data"), s.isArray(data) else {
                failure = LLMQError(.upstreamError, "\(provider) sent an embeddings answer without a data list", retryable: true)
                return
            }
            s.forEachElement(data) { n, item in
                guard failure == nil, let vec = s.member(item, "embedding"), s.isArray(vec) else { return }
                let raw = s.member(item, "index")
                guard let index = raw.map(s.index) ?? n, index < inputs else {
                    let said = raw.map { String(decoding: s.raw($0).prefix(40), as: UTF8.self) } ?? String(n)
                    failure = LLMQError(.upstreamError, "\(provider) sent embedding index \(said) for \(inputs) inputs", retryable: true)
                    return
                }
                writer.embedding(index: index, vectorJSON: s.raw(vec))
            }
            if failure != nil { return }
            if let u = s.member(top, "usage"), s.isObject(u) {
                usage.promptTokens = s.member(u, "prompt_tokens").flatMap(s.count)
                usage.completionTokens = 0
            }
        }
        finishReason = "stop"
        complete = failure == nil
    }
}
