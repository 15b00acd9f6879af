import Foundation

/// Cohere's v2 API: `POST /v2/chat` with `stream: true` (SSE whose events carry
/// a `type`: message-start, content-delta, tool-call-start/delta/end,
/// message-end with finish_reason and usage), and `POST /v2/embed`.
public struct CohereProvider: Provider {
    public let endpoint: ProviderEndpoint

    public static let defaultBaseURL = "https://api.cohere.com"

    public init(name: String, config: ProviderConfig, apiKey: String?) {
        endpoint = ProviderEndpoint(name: name, config: config, baseURL: trimmedBaseURL(config.baseURL, default: Self.defaultBaseURL, dropping: ["/v2", "/v1"]),
                                    apiKey: apiKey, authHeaders: keyHeader(apiKey))
    }

    public func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest {
        if job.mode == .embed {
            var body: [String: JSONValue] = [
                "model": .string(model), "texts": .array(job.input.map { .string($0) }),
                "input_type": "search_document", "embedding_types": ["float"],
            ]
            job.params.mergeExtra(into: &body)
            return jsonRequest(url: baseURL + "/v2/embed", body: .object(body), auth: authHeaders, job: job, timeout: timeout, streaming: false)
        }
        let chat = try ChatRequest(job: job, provider: name)
        var body: [String: JSONValue] = ["model": .string(model), "stream": true, "messages": .array(messages(chat))]
        let p = job.params
        if let v = maxTokens(job) { body["max_tokens"] = .int(v) }
        if let v = p.temperature { body["temperature"] = .double(v) }
        if let v = p.topP { body["p"] = .double(v) }
        if let v = p.stop { body["stop_sequences"] = .array(v.map { .string($0) }) }
        if let v = p.seed { body["seed"] = .int(v) }
        var tools = chat.tools
        switch chat.toolChoice {
        case nil, .auto?: break
        case .none?: body["tool_choice"] = "NONE"
        case .required?: body["tool_choice"] = "REQUIRED"
        case .named(let n)?:
            // Cohere cannot name the tool; offering only that one and requiring a call comes to the same.
            tools = tools.filter { $0.name == n }
            body["tool_choice"] = "REQUIRED"
        }
        if !tools.isEmpty {
            body["tools"] = .array(tools.map { t in
                var f: [String: JSONValue] = ["name": .string(t.name), "parameters": t.parameters ?? ["type": "object", "properties": [:]]]
                if let d = t.description { f["description"] = .string(d) }
                return ["type": "function", "function": .object(f)]
            })
        }
        switch chat.output {
        case nil, .text?: break
        case .jsonObject?: body["response_format"] = ["type": "json_object"]
        case .jsonSchema(_, let schema, _)?: body["response_format"] = ["type": "json_object", "json_schema": schema]
        }
        p.mergeExtra(into: &body)
        return jsonRequest(url: baseURL + "/v2/chat", body: .object(body), auth: authHeaders, job: job, timeout: timeout, streaming: true)
    }

    /// Cohere v2 messages are OpenAI's shape: system/user/assistant/tool, tool_calls and tool_call_id.
    func messages(_ chat: ChatRequest) -> [JSONValue] {
        chat.messages.map { m in
            var o: [String: JSONValue] = ["role": .string(m.role == "developer" ? "system" : m.role)]
            let images = m.parts.contains { if case .image = $0 { true } else { false } }
            if images {
                o["content"] = .array(m.parts.map { part in
                    switch part {
                    case .text(let t): ["type": "text", "text": .string(t)]
                    case .image(let url): ["type": "image_url", "image_url": ["url": .string(url)]]
                    }
                })
            } else if !m.text.isEmpty || m.toolCalls.isEmpty {
                o["content"] = .string(m.text)
            }
            if !m.toolCalls.isEmpty {
                o["tool_calls"] = .array(m.toolCalls.map { c in
                    ["id": .string(c.id), "type": "function", "function": ["name": .string(c.name), "arguments": .string(c.arguments)]]
                })
            }
            if let id = m.toolCallID { o["tool_call_id"] = .string(id) }
            return .object(o)
        }
    }

    public func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder {
        if job.mode == .embed {
            let provider = name
            return JSONBodyDecoder(writer: writer, provider: name, inputs: job.input.count) { s, top, writer throws(LLMQError) in
                guard let e = s.member(top, "embeddings"), let vectors = s.member(e, "float"), s.isArray(vectors) else {
                    throw LLMQError(.upstreamError, "\(provider) sent an embed answer without embeddings.float", retryable: true)
                }
                s.forEachElement(vectors) { i, v in writer.embedding(index: i, vectorJSON: s.raw(v)) }
                let billed = s.member(top, "meta").flatMap { s.member($0, "billed_units") }
                return Usage(promptTokens: billed.flatMap { s.member($0, "input_tokens") }.flatMap(s.count), completionTokens: 0)
            }
        }
        return CohereStreamDecoder(writer: writer, provider: name)
    }

    public func modelsRequest() -> HTTPRequest? { getRequest(url: baseURL + "/v1/models?page_size=1000", auth: authHeaders) }

    public func modelNames(from body: [UInt8]) -> [String] {
        ((try? JSONValue.parse(body))?["models"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
    }

    static func finishReason(_ raw: String) -> String {
        switch raw {
        case "MAX_TOKENS": "length"
        case "TOOL_CALL": "tool_calls"
        default: "stop"  // COMPLETE, STOP_SEQUENCE
        }
    }
}

/// Decodes Cohere's v2 chat stream.
///
/// Thread rules: engine thread only (see `EventWriter`).
final class CohereStreamDecoder: StreamEventDecoder {
    override class var streamEnd: String { "message-end" }

    override func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        if data.count == 6 && data.elementsEqual("[DONE]".utf8) { return true }
        let s = JSONScanner(data)
        guard let top = s.validate(), s.isObject(top), let type = s.member(top, "type") else { return malformed(data) }
        let t = type.dropQuotes
        let message = s.member(top, "delta").flatMap { s.member($0, "message") }
        if s.equals(t, "content-delta") || s.equals(t, "content-start") {
            if let text = message.flatMap({ s.member($0, "content") }).flatMap({ s.member($0, "text") }).flatMap(s.stringBody) {
                writer.chunk(escaped: text)
            }
        } else if s.equals(t, "tool-call-start") || s.equals(t, "tool-call-delta") {
            guard let call = message.flatMap({ s.member($0, "tool_calls") }) else { return true }
            guard let index = blockIndex(s, s.member(top, "index")) else { return false }
            let function = s.member(call, "function")
            let args = function.flatMap { s.member($0, "arguments") }.flatMap(s.stringBody) ?? UnsafeBufferPointer(start: nil, count: 0)
            let start = s.equals(t, "tool-call-start")
            if start || !args.isEmpty {
                writer.toolCall(index: index, callID: start ? s.member(call, "id").flatMap(s.string) : nil,
                                name: start ? function.flatMap { s.member($0, "name") }.flatMap(s.string) : nil, argumentsEscaped: args)
            }
        } else if s.equals(t, "message-end") {
            let delta = s.member(top, "delta")
            if let e = delta.flatMap({ s.member($0, "error") }).flatMap(s.string), !e.isEmpty {
                failed = LLMQError(.upstreamError, "\(provider) reported an error at the end of the stream: \(e)", retryable: true)
                return false
            }
            let raw = delta.flatMap { s.member($0, "finish_reason") }.flatMap(s.string) ?? "COMPLETE"
            if raw == "ERROR" || raw == "TIMEOUT" {
                failed = LLMQError(raw == "TIMEOUT" ? .timeout : .upstreamError, "\(provider) ended the stream with finish_reason \(raw)", retryable: true)
                return false
            }
            finishReason = CohereProvider.finishReason(raw)
            if let u = delta.flatMap({ s.member($0, "usage") }) {
                let counts = s.member(u, "tokens") ?? s.member(u, "billed_units")
                usage.promptTokens = counts.flatMap { s.member($0, "input_tokens") }.flatMap(s.count)
                usage.completionTokens = counts.flatMap { s.member($0, "output_tokens") }.flatMap(s.count)
            }
            complete = true
        }
        return true  // message-start, content-end, tool-plan-delta, tool-call-end, citations
    }
}
