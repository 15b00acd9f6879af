import Foundation

/// Ollama's native API: `/api/chat` (chat) and `/api/generate` (complete)
/// streamed as NDJSON (one object per line, the last with `done`,
/// `done_reason`, `prompt_eval_count`, `eval_count`), `/api/embed`, and the
/// model list at `/api/tags`. No key: Ollama needs none.
public struct OllamaProvider: Provider {
    public let endpoint: ProviderEndpoint

    public static let defaultBaseURL = "http://127.0.0.1:11434"

    public init(name: String, config: ProviderConfig, apiKey: String?) {
        // Ollama itself takes no key; one is sent when configured, for proxies in front of it.
        endpoint = ProviderEndpoint(name: name, config: config, baseURL: trimmedBaseURL(config.baseURL, default: Self.defaultBaseURL, dropping: ["/api"]),
                                    apiKey: apiKey, authHeaders: keyHeader(apiKey))
    }

    public func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest {
        var body: [String: JSONValue] = ["model": .string(model)]
        let path: String
        switch job.mode {
        case .embed:
            path = "/api/embed"
            body["input"] = .array(job.input.map { .string($0) })
        case .complete:
            path = "/api/generate"
            body["prompt"] = .string(job.prompt ?? "")
            body["stream"] = true
            if job.params.tools != nil { throw LLMQError(.badRequest, "\(name) (ollama) takes tools in chat jobs only (/api/chat)") }
            if let f = try format(ChatRequest(job: job, provider: name).output) { body["format"] = f }
        default:
            path = "/api/chat"
            let chat = try ChatRequest(job: job, provider: name)
            body["messages"] = .array(try messages(chat))
            body["stream"] = true
            switch chat.toolChoice {
            case nil, .auto?:
                if !chat.tools.isEmpty { body["tools"] = .array(chat.tools.map(Self.tool)) }
            case .none?: break
            case .required?, .named?:
                throw LLMQError(.badRequest, "\(name) (ollama) cannot be made to call a tool; use tool_choice auto (or none), or a provider that can")
            }
            if let f = try format(chat.output) { body["format"] = f }
        }
        if job.mode != .embed {
            var options: [String: JSONValue] = [:]
            let p = job.params
            if let v = maxTokens(job) { options["num_predict"] = .int(v) }
            if let v = p.temperature { options["temperature"] = .double(v) }
            if let v = p.topP { options["top_p"] = .double(v) }
            if let v = p.stop { options["stop"] = .array(v.map { .string($0) }) }
            if let v = p.seed { options["seed"] = .int(v) }
            // params.extra.options adds to these rather than replacing them.
            if let more = p.extra["options"]?.objectValue { options.merge(more) { $1 } }
            if !options.isEmpty { body["options"] = .object(options) }
        }
        var extra = job.params
        extra.extra["options"] = nil
        extra.mergeExtra(into: &body)
        return jsonRequest(url: baseURL + path, body: .object(body), auth: authHeaders, job: job, timeout: timeout,
                           streaming: job.mode != .embed, accept: job.mode == .embed ? nil : "application/x-ndjson")
    }

    func format(_ output: ChatRequest.OutputFormat?) throws(LLMQError) -> JSONValue? {
        switch output {
        case nil, .text?: nil
        case .jsonObject?: "json"
        case .jsonSchema(_, let schema, _)?: schema
        }
    }

    static func tool(_ t: ChatRequest.Tool) -> JSONValue {
        var f: [String: JSONValue] = ["name": .string(t.name), "parameters": t.parameters ?? ["type": "object", "properties": [:]]]
        if let d = t.description { f["description"] = .string(d) }
        return ["type": "function", "function": .object(f)]
    }

    /// Ollama messages: string content, images as bare base64, tool call arguments as objects.
    func messages(_ chat: ChatRequest) throws(LLMQError) -> [JSONValue] {
        var out: [JSONValue] = []
        for m in chat.messages {
            var o: [String: JSONValue] = ["role": .string(m.role == "developer" ? "system" : m.role), "content": .string(m.text)]
            var images: [JSONValue] = []
            for case .image(let url) in m.parts {
                guard let d = ChatRequest.dataURL(url) else {
                    throw LLMQError(.badRequest, "\(name) (ollama) takes images inline: give image_url.url as a data: URL (data:image/png;base64,…)")
                }
                images.append(.string(d.base64))
            }
            if !images.isEmpty { o["images"] = .array(images) }
            if !m.toolCalls.isEmpty {
                var calls: [JSONValue] = []
                for c in m.toolCalls {
                    calls.append(["function": ["name": .string(c.name), "arguments": try ChatRequest.argumentsObject(c.arguments, provider: name)]])
                }
                o["tool_calls"] = .array(calls)
            }
            if m.role == "tool", let fn = m.name ?? m.toolCallID.flatMap(chat.toolName) { o["tool_name"] = .string(fn) }
            out.append(.object(o))
        }
        return out
    }

    public func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder {
        if job.mode == .embed {
            let provider = name
            return JSONBodyDecoder(writer: writer, provider: name, inputs: job.input.count) { s, top, writer throws(LLMQError) in
                guard let list = s.member(top, "embeddings"), s.isArray(list) else {
                    throw LLMQError(.upstreamError, "\(provider) sent an /api/embed answer without embeddings", retryable: true)
                }
                s.forEachElement(list) { i, v in writer.embedding(index: i, vectorJSON: s.raw(v)) }
                return Usage(promptTokens: s.member(top, "prompt_eval_count").flatMap(s.count), completionTokens: 0)
            }
        }
        return OllamaStreamDecoder(writer: writer, provider: name)
    }

    public func modelsRequest() -> HTTPRequest? { getRequest(url: baseURL + "/api/tags", auth: authHeaders) }

    public func modelNames(from body: [UInt8]) -> [String] {
        ((try? JSONValue.parse(body))?["models"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue ?? $0["model"]?.stringValue }
    }

    static func finishReason(_ raw: String) -> String {
        raw == "length" ? "length" : "stop"  // stop, load, unload
    }
}

/// Decodes Ollama's NDJSON streams (`/api/chat` lines carry `message`, `/api/generate` lines `response`).
///
/// Thread rules: engine thread only (see `EventWriter`).
final class OllamaStreamDecoder: StreamEventDecoder {
    override class var framing: Framing { .ndjson }
    override class var streamEnd: String { "its done line" }
    private var tools = 0
    private var escaped: [UInt8] = []

    override func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        let s = JSONScanner(data)
        guard let top = s.validate(), s.isObject(top) else { return malformed(data) }
        if let e = s.member(top, "error") {
            failed = LLMQError(.upstreamError, "\(provider) reported an error mid-stream: \(s.string(e) ?? "no message")", retryable: true)
            return false
        }
        if let m = s.member(top, "message"), s.isObject(m) {
            if let t = s.member(m, "content").flatMap(s.stringBody) { writer.chunk(escaped: t) }
            if let calls = s.member(m, "tool_calls"), s.isArray(calls) {
                s.forEachElement(calls) { _, call in
                    guard let f = s.member(call, "function") else { return }
                    let index = tools
                    tools += 1
                    escaped.removeAll(keepingCapacity: true)
                    if let args = s.member(f, "arguments") {
                        if let text = s.stringBody(args) { escaped.append(contentsOf: text) } else { JSONWriter.appendEscaped(bytes: s.raw(args), to: &escaped) }
                    }
                    let id = s.member(call, "id").flatMap(s.string) ?? "call_\(index)"
                    escaped.withUnsafeBufferPointer {
                        writer.toolCall(index: index, callID: id, name: s.member(f, "name").flatMap(s.string), argumentsEscaped: $0)
                    }
                }
            }
        } else if let t = s.member(top, "response").flatMap(s.stringBody) {
            writer.chunk(escaped: t)
        }
        if let done = s.member(top, "done"), s.bytes[done.lowerBound] == UInt8(ascii: "t") {
            let reason = OllamaProvider.finishReason(s.member(top, "done_reason").flatMap(s.string) ?? "stop")
            finishReason = tools > 0 && reason == "stop" ? "tool_calls" : reason
            usage.promptTokens = s.member(top, "prompt_eval_count").flatMap(s.count)
            usage.completionTokens = s.member(top, "eval_count").flatMap(s.count)
            complete = true
        }
        return true
    }
}
