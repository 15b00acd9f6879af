import Foundation

/// Anthropic's Messages API: `POST /v1/messages` with `stream: true`, answered
/// as SSE (`message_start`, `content_block_start/delta/stop`, `message_delta`,
/// `message_stop`, `ping`, `error`). The key goes in `x-api-key`, the API version
/// in `anthropic-version`; system messages become the top-level `system`.
/// Anthropic has no embeddings API.
public struct AnthropicProvider: Provider {
    public let endpoint: ProviderEndpoint

    public static let defaultBaseURL = "https://api.anthropic.com"
    public static let defaultVersion = "2023-06-01"
    /// Anthropic requires max_tokens; this is used when neither the job nor `max_tokens` in the config say.
    public static let defaultMaxTokens = 4096

    public init(name: String, config: ProviderConfig, apiKey: String?) {
        endpoint = ProviderEndpoint(
            name: name, config: config, baseURL: trimmedBaseURL(config.baseURL, default: Self.defaultBaseURL, dropping: ["/v1"]), apiKey: apiKey,
            authHeaders: ["anthropic-version: \(config.apiVersion ?? Self.defaultVersion)"] + keyHeader(apiKey, name: "x-api-key", scheme: ""))
    }

    public func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest {
        guard job.mode != .embed else {
            throw LLMQError(.badRequest, "\(name) (anthropic) has no embeddings API; route embed jobs to a provider that has one (openai, gemini, cohere, ollama)")
        }
        let chat = try ChatRequest(job: job, provider: name)
        var body: [String: JSONValue] = [
            "model": .string(model), "stream": true,
            "max_tokens": .int(maxTokens(job) ?? Self.defaultMaxTokens),
            "messages": .array(try messages(chat)),
        ]
        if let system = chat.systemText { body["system"] = .string(system) }
        let p = job.params
        if let v = p.temperature { body["temperature"] = .double(v) }
        if let v = p.topP { body["top_p"] = .double(v) }
        if let v = p.stop { body["stop_sequences"] = .array(v.map { .string($0) }) }
        if !chat.tools.isEmpty {
            body["tools"] = .array(chat.tools.map { t in
                var o: [String: JSONValue] = ["name": .string(t.name), "input_schema": t.parameters ?? ["type": "object", "properties": [:]]]
                if let d = t.description { o["description"] = .string(d) }
                return .object(o)
            })
        }
        switch chat.toolChoice {
        case nil: break
        case .auto?: body["tool_choice"] = ["type": "auto"]
        case .none?: body["tool_choice"] = ["type": "none"]
        case .required?: body["tool_choice"] = ["type": "any"]
        case .named(let n)?: body["tool_choice"] = ["type": "tool", "name": .string(n)]
        }
        switch chat.output {
        case nil, .text?: break
        case .jsonObject?:
            throw LLMQError(.badRequest, "\(name) (anthropic) needs a schema for JSON output; use params.response_format {type: json_schema, json_schema: {schema}}")
        case .jsonSchema(_, let schema, _)?:
            body["output_config"] = ["format": ["type": "json_schema", "schema": schema]]
        }
        p.mergeExtra(into: &body)
        return jsonRequest(url: baseURL + "/v1/messages", body: .object(body), auth: authHeaders, job: job, timeout: timeout, streaming: true)
    }

    /// OpenAI-style messages in Anthropic's form: content blocks, tool_use in
    /// assistant turns, tool results as user turns; consecutive turns of one role merged.
    func messages(_ chat: ChatRequest) throws(LLMQError) -> [JSONValue] {
        var out: [(role: String, blocks: [JSONValue])] = []
        for m in chat.conversation {
            var role = m.role == "assistant" ? "assistant" : "user"
            var blocks: [JSONValue] = []
            if m.role == "tool" {
                blocks.append(["type": "tool_result", "tool_use_id": .string(m.toolCallID ?? ""), "content": .string(m.text)])
                role = "user"
            } else {
                for part in m.parts {
                    switch part {
                    case .text(let t) where !t.isEmpty: blocks.append(["type": "text", "text": .string(t)])
                    case .text: break
                    case .image(let url):
                        if let d = ChatRequest.dataURL(url) {
                            blocks.append(["type": "image", "source": ["type": "base64", "media_type": .string(d.mediaType), "data": .string(d.base64)]])
                        } else {
                            blocks.append(["type": "image", "source": ["type": "url", "url": .string(url)]])
                        }
                    }
                }
                for c in m.toolCalls {
                    blocks.append(["type": "tool_use", "id": .string(c.id), "name": .string(c.name),
                                   "input": try ChatRequest.argumentsObject(c.arguments, provider: name)])
                }
            }
            if blocks.isEmpty { continue }
            if let last = out.last, last.role == role {
                out[out.count - 1].blocks += blocks
            } else {
                out.append((role, blocks))
            }
        }
        return out.map { ["role": .string($0.role), "content": .array($0.blocks)] }
    }

    public func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder {
        AnthropicStreamDecoder(writer: writer, provider: name)
    }

    public func modelsRequest() -> HTTPRequest? { getRequest(url: baseURL + "/v1/models", auth: authHeaders) }

    public func modelNames(from body: [UInt8]) -> [String] {
        ((try? JSONValue.parse(body))?["data"]?.arrayValue ?? []).compactMap { $0["id"]?.stringValue }
    }

    /// Anthropic's stop reasons in OpenAI's vocabulary.
    static func finishReason(_ raw: String) -> String {
        switch raw {
        case "max_tokens", "model_context_window_exceeded": "length"
        case "tool_use": "tool_calls"
        case "refusal": "content_filter"
        default: "stop"  // end_turn, stop_sequence, pause_turn
        }
    }
}

/// Decodes Anthropic's Messages stream; text and tool input are passed on still escaped.
///
/// Thread rules: engine thread only (see `EventWriter`).
final class AnthropicStreamDecoder: StreamEventDecoder {
    override class var streamEnd: String { "message_stop" }
    /// Content block index → tool call index (text blocks are not tool calls).
    private var toolIndex: [Int: Int] = [:]
    private var inputTokens = 0

    override func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        let s = JSONScanner(data)
        guard let top = s.validate(), s.isObject(top), let type = s.member(top, "type") else { return malformed(data) }
        if s.equals(type.dropQuotes, "content_block_delta") {
            guard let d = s.member(top, "delta"), let dt = s.member(d, "type") else { return true }
            guard let index = blockIndex(s, s.member(top, "index")) else { return false }
            if s.equals(dt.dropQuotes, "text_delta") {
                if let t = s.member(d, "text").flatMap(s.stringBody) { writer.chunk(escaped: t) }
            } else if s.equals(dt.dropQuotes, "input_json_delta"), let tool = toolIndex[index] {
                if let j = s.member(d, "partial_json").flatMap(s.stringBody), !j.isEmpty {
                    writer.toolCall(index: tool, callID: nil, name: nil, argumentsEscaped: j)
                }
            }
            return true
        }
        if s.equals(type.dropQuotes, "content_block_start") {
            guard let block = s.member(top, "content_block"), let bt = s.member(block, "type") else { return true }
            guard let index = blockIndex(s, s.member(top, "index")) else { return false }
            if s.equals(bt.dropQuotes, "tool_use") {
                let tool = toolIndex.count
                toolIndex[index] = tool
                writer.toolCall(index: tool, callID: s.member(block, "id").flatMap(s.string), name: s.member(block, "name").flatMap(s.string),
                                argumentsEscaped: UnsafeBufferPointer(start: nil, count: 0))
            } else if s.equals(bt.dropQuotes, "text"), let t = s.member(block, "text").flatMap(s.stringBody) {
                writer.chunk(escaped: t)
            }
        } else if s.equals(type.dropQuotes, "message_start") {
            if let u = s.member(top, "message").flatMap({ s.member($0, "usage") }) { readUsage(s, u) }
        } else if s.equals(type.dropQuotes, "message_delta") {
            if let r = s.member(top, "delta").flatMap({ s.member($0, "stop_reason") }).flatMap(s.string) {
                finishReason = AnthropicProvider.finishReason(r)
            }
            if let u = s.member(top, "usage") { readUsage(s, u) }
        } else if s.equals(type.dropQuotes, "message_stop") {
            complete = true
        } else if s.equals(type.dropQuotes, "error") {
            let e = s.member(top, "error")
            let kind = e.flatMap { s.member($0, "type") }.flatMap(s.string) ?? "error"
            let message = e.flatMap { s.member($0, "message") }.flatMap(s.string) ?? "no message"
            failed = Self.streamError(kind: kind, message: message, provider: provider)
            return false
        }
        return true  // ping, content_block_stop, and event types added later
    }

    private func readUsage(_ s: JSONScanner, _ u: Range<Int>) {
        let input = Usage.sum(s.member(u, "input_tokens").flatMap(s.count), s.member(u, "cache_creation_input_tokens").flatMap(s.count),
                              s.member(u, "cache_read_input_tokens").flatMap(s.count))
        if let input { usage.promptTokens = input }
        if let o = s.member(u, "output_tokens").flatMap(s.count) { usage.completionTokens = o }
    }

    /// An `error` event's type as a protocol error: overloaded is unavailable (retried), rate limits are rate limits.
    static func streamError(kind: String, message: String, provider: String) -> LLMQError {
        switch kind {
        case "overloaded_error": LLMQError(.upstreamUnavailable, "\(provider) is overloaded (\(kind) mid-stream): \(message)", retryable: true)
        case "rate_limit_error": LLMQError(.rateLimited, "\(provider) is rate limiting (\(kind) mid-stream): \(message)", retryable: true)
        case "api_error": LLMQError(.upstreamError, "\(provider) failed mid-stream (\(kind)): \(message)", retryable: true)
        default: LLMQError(.upstreamError, "\(provider) reported \(kind) mid-stream: \(message)", retryable: false)
        }
    }
}

extension Range where Bound == Int {
    /// A string value's range without its quotes, for comparing with `JSONScanner.equals`.
    var dropQuotes: Range<Int> { count >= 2 ? (lowerBound + 1)..<(upperBound - 1) : self }
}
