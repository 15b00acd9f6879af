import Foundation

/// Google's Gemini API: `models/MODEL:streamGenerateContent?alt=sse` (SSE of
/// `GenerateContentResponse`s, no end marker: the finish reason ends it) and
/// `models/MODEL:batchEmbedContents`. The key goes in `x-goog-api-key`; roles map
/// assistant → model and system → `systemInstruction`. A blocked prompt or
/// answer (safety, recitation …) is an error naming Gemini's reason.
public struct GeminiProvider: Provider {
    public let endpoint: ProviderEndpoint

    public static let defaultBaseURL = "https://generativelanguage.googleapis.com/v1beta"

    public init(name: String, config: ProviderConfig, apiKey: String?) {
        endpoint = ProviderEndpoint(name: name, config: config, baseURL: trimmedBaseURL(config.baseURL, default: Self.defaultBaseURL), apiKey: apiKey,
                                    authHeaders: keyHeader(apiKey, name: "x-goog-api-key", scheme: ""))
    }

    /// `gemini-2.0-flash` or `models/gemini-2.0-flash`, as one path segment.
    static func modelPath(_ model: String) -> String {
        pathSegment(model.hasPrefix("models/") ? String(model.dropFirst(7)) : model)
    }

    public func makeRequest(job: Job, model: String, timeout: Double?) throws(LLMQError) -> HTTPRequest {
        let m = Self.modelPath(model)
        if job.mode == .embed {
            let requests: [JSONValue] = job.input.map { text in
                var r: [String: JSONValue] = ["model": .string("models/\(m)"), "content": ["parts": [["text": .string(text)]]]]
                job.params.mergeExtra(into: &r)  // taskType, outputDimensionality … apply to every input
                return .object(r)
            }
            return jsonRequest(url: "\(baseURL)/models/\(m):batchEmbedContents", body: ["requests": .array(requests)],
                               auth: authHeaders, job: job, timeout: timeout, streaming: false)
        }
        let chat = try ChatRequest(job: job, provider: name)
        var body: [String: JSONValue] = ["contents": .array(try contents(chat))]
        if let system = chat.systemText { body["systemInstruction"] = ["parts": [["text": .string(system)]]] }
        var generation: [String: JSONValue] = [:]
        let p = job.params
        if let v = maxTokens(job) { generation["maxOutputTokens"] = .int(v) }
        if let v = p.temperature { generation["temperature"] = .double(v) }
        if let v = p.topP { generation["topP"] = .double(v) }
        if let v = p.stop { generation["stopSequences"] = .array(v.map { .string($0) }) }
        if let v = p.seed { generation["seed"] = .int(v) }
        switch chat.output {
        case nil, .text?: break
        case .jsonObject?: generation["responseMimeType"] = "application/json"
        case .jsonSchema(_, let schema, _)?:
            generation["responseMimeType"] = "application/json"
            // responseJsonSchema takes JSON Schema as jobs give it (responseSchema takes only an OpenAPI subset).
            generation["responseJsonSchema"] = schema
        }
        if !generation.isEmpty { body["generationConfig"] = .object(generation) }
        if !chat.tools.isEmpty {
            body["tools"] = [["functionDeclarations": .array(chat.tools.map { t in
                var o: [String: JSONValue] = ["name": .string(t.name)]
                if let d = t.description { o["description"] = .string(d) }
                if let params = t.parameters { o["parametersJsonSchema"] = params }
                return .object(o)
            })]]
        }
        if let choice = chat.toolChoice {
            var config: [String: JSONValue]
            switch choice {
            case .auto: config = ["mode": "AUTO"]
            case .none: config = ["mode": "NONE"]
            case .required: config = ["mode": "ANY"]
            case .named(let n): config = ["mode": "ANY", "allowedFunctionNames": [.string(n)]]
            }
            body["toolConfig"] = ["functionCallingConfig": .object(config)]
        }
        p.mergeExtra(into: &body)
        return jsonRequest(url: "\(baseURL)/models/\(m):streamGenerateContent?alt=sse", body: .object(body),
                           auth: authHeaders, job: job, timeout: timeout, streaming: true)
    }

    /// OpenAI-style messages as Gemini `contents`: user/model turns of parts, tool
    /// calls as `functionCall`, tool results as `functionResponse`; consecutive turns of one role merged.
    func contents(_ chat: ChatRequest) throws(LLMQError) -> [JSONValue] {
        var out: [(role: String, parts: [JSONValue])] = []
        for m in chat.conversation {
            let role = m.role == "assistant" ? "model" : "user"
            var parts: [JSONValue] = []
            if m.role == "tool" {
                let id = m.toolCallID ?? ""
                guard let fn = m.name ?? chat.toolName(for: id) else {
                    throw LLMQError(.badRequest, "a tool message answers call \"\(id)\", which no assistant message made; \(name) (gemini) needs the function's name")
                }
                let text = m.text
                let parsed = try? JSONValue.parse(Array(text.utf8))
                let response: JSONValue = parsed?.objectValue != nil ? parsed! : ["content": .string(text)]
                parts.append(["functionResponse": ["name": .string(fn), "response": response]])
            } else {
                for part in m.parts {
                    switch part {
                    case .text(let t) where !t.isEmpty: parts.append(["text": .string(t)])
                    case .text: break
                    case .image(let url):
                        guard let d = ChatRequest.dataURL(url) else {
                            throw LLMQError(.badRequest, "\(name) (gemini) takes images inline: give image_url.url as a data: URL (data:image/png;base64,…)")
                        }
                        parts.append(["inlineData": ["mimeType": .string(d.mediaType), "data": .string(d.base64)]])
                    }
                }
                for c in m.toolCalls {
                    parts.append(["functionCall": ["name": .string(c.name), "args": try ChatRequest.argumentsObject(c.arguments, provider: name)]])
                }
            }
            if parts.isEmpty { continue }
            if let last = out.last, last.role == role { out[out.count - 1].parts += parts } else { out.append((role, parts)) }
        }
        return out.map { ["role": .string($0.role), "parts": .array($0.parts)] }
    }

    public func makeDecoder(job: Job, writer: EventWriter) -> ResponseDecoder {
        if job.mode == .embed {
            let provider = name
            return JSONBodyDecoder(writer: writer, provider: name, inputs: job.input.count) { s, top, writer throws(LLMQError) in
                guard let list = s.member(top, "embeddings"), s.isArray(list) else {
                    throw LLMQError(.upstreamError, "\(provider) sent a batchEmbedContents answer without embeddings", retryable: true)
                }
                s.forEachElement(list) { i, e in
                    if let v = s.member(e, "values"), s.isArray(v) { writer.embedding(index: i, vectorJSON: s.raw(v)) }
                }
                // batchEmbedContents reports no token counts.
                return Usage(promptTokens: nil, completionTokens: 0)
            }
        }
        return GeminiStreamDecoder(writer: writer, provider: name)
    }

    public func error(for result: HTTPResult) -> LLMQError {
        var e = defaultError(for: result)
        let raw = String(decoding: result.errorBody.prefix(8192), as: UTF8.self)
        if e.code == .badRequest && raw.contains("API_KEY_INVALID") {
            // Gemini answers a bad key with 400 INVALID_ARGUMENT.
            e = LLMQError(.auth, e.message + "; check the API key")
        }
        if result.status == 429 && e.retryAfter == nil, let v = try? JSONValue.parse(result.errorBody) {
            // google.rpc.RetryInfo: {"retryDelay": "31s"}
            for d in v["error"]?["details"]?.arrayValue ?? [] {
                if let delay = d["retryDelay"]?.stringValue, let s = UpstreamError.duration(delay) { e.retryAfter = UpstreamError.clampHint(s) }
            }
        }
        return e
    }

    public func modelsRequest() -> HTTPRequest? { getRequest(url: baseURL + "/models?pageSize=1000", auth: authHeaders) }

    public func modelNames(from body: [UInt8]) -> [String] {
        ((try? JSONValue.parse(body))?["models"]?.arrayValue ?? []).compactMap { m in
            m["name"]?.stringValue.map { $0.hasPrefix("models/") ? String($0.dropFirst(7)) : $0 }
        }
    }

    /// Gemini's finish reasons: nil when the reason means the answer was blocked (an error).
    static func finishReason(_ raw: String) -> String? {
        switch raw {
        case "MAX_TOKENS": "length"
        case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE": nil
        default: "stop"  // STOP, OTHER, FINISH_REASON_UNSPECIFIED
        }
    }
}

/// Decodes `streamGenerateContent?alt=sse`: each event a whole `GenerateContentResponse`
/// whose first candidate carries the next parts; usage is cumulative.
///
/// Thread rules: engine thread only (see `EventWriter`).
final class GeminiStreamDecoder: StreamEventDecoder {
    override class var streamEnd: String { "a finishReason" }
    private var tools = 0
    private var escaped: [UInt8] = []

    override func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        let s = JSONScanner(data)
        guard let top = s.validate(), s.isObject(top) else { return malformed(data) }
        if let e = s.member(top, "error") {
            let message = s.member(e, "message").flatMap(s.string) ?? "no message"
            let status = s.member(e, "status").flatMap(s.string) ?? ""
            let code: LLMQError.Code = status == "RESOURCE_EXHAUSTED" ? .rateLimited : status == "UNAVAILABLE" ? .upstreamUnavailable : .upstreamError
            failed = LLMQError(code, "\(provider) reported an error mid-stream (\(status.isEmpty ? "error" : status)): \(message)", retryable: true)
            return false
        }
        if let u = s.member(top, "usageMetadata"), s.isObject(u) {
            if let p = s.member(u, "promptTokenCount").flatMap(s.count) { usage.promptTokens = p }
            let out = s.member(u, "candidatesTokenCount").flatMap(s.count)
            let thoughts = s.member(u, "thoughtsTokenCount").flatMap(s.count)
            if let sum = Usage.sum(out, thoughts) { usage.completionTokens = sum }
        }
        if let block = s.member(top, "promptFeedback").flatMap({ s.member($0, "blockReason") }).flatMap(s.string) {
            failed = LLMQError(.badRequest, "\(provider) blocked the prompt (blockReason \(block)); rephrase it or adjust the safety settings")
            return false
        }
        guard let candidates = s.member(top, "candidates"), let first = s.element(candidates, 0) else { return true }
        if let parts = s.member(first, "content").flatMap({ s.member($0, "parts") }) {
            s.forEachElement(parts) { _, part in
                if let thought = s.member(part, "thought"), s.bytes[thought.lowerBound] == UInt8(ascii: "t") { return }
                if let t = s.member(part, "text").flatMap(s.stringBody) {
                    writer.chunk(escaped: t)
                } else if let call = s.member(part, "functionCall") {
                    let index = tools
                    tools += 1
                    escaped.removeAll(keepingCapacity: true)
                    if let args = s.member(call, "args") { JSONWriter.appendEscaped(bytes: s.raw(args), to: &escaped) } else { escaped += Array("{}".utf8) }
                    let id = s.member(call, "id").flatMap(s.string) ?? "call_\(index)"
                    escaped.withUnsafeBufferPointer {
                        writer.toolCall(index: index, callID: id, name: s.member(call, "name").flatMap(s.string), argumentsEscaped: $0)
                    }
                }
            }
        }
        if let raw = s.member(first, "finishReason").flatMap(s.string) {
            guard let reason = GeminiProvider.finishReason(raw) else {
                failed = LLMQError(.badRequest, "\(provider) blocked the answer (finishReason \(raw)); rephrase the prompt or adjust the safety settings")
                return false
            }
            if raw == "MALFORMED_FUNCTION_CALL" || raw == "UNEXPECTED_TOOL_CALL" {
                failed = LLMQError(.upstreamError, "\(provider) produced an unusable function call (finishReason \(raw))", retryable: true)
                return false
            }
            finishReason = tools > 0 && reason == "stop" ? "tool_calls" : reason
            complete = true
        }
        return true
    }
}
