import Foundation
import LLMQ

/// An OpenAI request body turned into a protocol job: which queue, the job, and how to answer.
struct OpenAIRequest: Sendable {
    enum Kind: Sendable { case chat, completion, embedding }

    var kind: Kind
    var mode: Mode
    var model: String
    var stream: Bool
    var includeUsage: Bool
    /// Keep running when the client leaves (`metadata.detach: true`).
    var detach: Bool
    /// Embeddings as base64 of little-endian float32 (the Python SDK asks for it by default).
    var base64: Bool
    var timeoutS: Double?
    var job: [String: JSONValue]

    /// Fields passed to `params` as they are.
    static let paramFields = ["temperature", "top_p", "stop", "seed", "response_format", "tools", "tool_choice", "cache"]
    /// Top-level protocol fields a client may set directly (llmq extensions to OpenAI's API).
    static let jobFields = ["timeout_s", "deadline", "max_attempts", "priority", "not_before", "traceparent"]
    /// Fields that shape the HTTP answer, not the job.
    static let answerFields: Set<String> = ["model", "messages", "prompt", "input", "stream", "stream_options", "user", "store", "n", "metadata",
                                            "max_tokens", "max_completion_tokens", "encoding_format"]

    static func parse(_ body: [UInt8], kind: Kind, id: String) throws(GatewayError) -> OpenAIRequest {
        let value: JSONValue
        do { value = try JSONValue.parse(body) } catch { throw .badRequest("the body is not valid JSON: \(error)", code: "invalid_json") }
        guard let o = value.objectValue else { throw .badRequest("the body must be a JSON object") }
        guard let model = o["model"]?.stringValue, !model.isEmpty else { throw .badRequest("\"model\" is required: a route name or PROVIDER/MODEL", code: "missing_model") }
        var job: [String: JSONValue] = ["id": .string(id), "model": .string(model)]
        var params: [String: JSONValue] = [:]
        var extra: [String: JSONValue] = [:]
        let mode: Mode
        switch kind {
        case .chat:
            mode = "chat"
            guard let m = o["messages"], m.arrayValue != nil else { throw .badRequest("\"messages\" is required: a list of {role, content}") }
            job["messages"] = m
        case .completion:
            mode = "complete"
            switch o["prompt"] {
            case .string(let s)?: job["prompt"] = .string(s)
            case .array(let a)? where a.count == 1 && a[0].stringValue != nil: job["prompt"] = a[0]
            default: throw .badRequest("\"prompt\" must be a string (lists of several prompts and token arrays are not supported)")
            }
        case .embedding:
            mode = "embed"
            switch o["input"] {
            case .string(let s)?: job["input"] = .string(s)
            case .array(let a)? where !a.isEmpty && a.allSatisfy({ $0.stringValue != nil }): job["input"] = .array(a)
            default: throw .badRequest("\"input\" must be a string or a non-empty list of strings (token arrays are not supported)")
            }
        }
        if let n = o["n"], n.intValue != 1 { throw .badRequest("only n=1 is supported") }
        let maxTokens = o["max_completion_tokens"] ?? o["max_tokens"]
        if let maxTokens, !maxTokens.isNull { params["max_tokens"] = maxTokens }
        for k in paramFields { if let v = o[k], !v.isNull { params[k] = v } }
        for k in jobFields { if let v = o[k], !v.isNull { job[k] = v } }
        for (k, v) in o where !answerFields.contains(k) && !paramFields.contains(k) && !jobFields.contains(k) && !v.isNull { extra[k] = v }
        if !extra.isEmpty { params["extra"] = .object(extra) }
        if !params.isEmpty { job["params"] = .object(params) }
        var detach = false
        if let md = o["metadata"], !md.isNull {
            guard let mo = md.objectValue else { throw .badRequest("\"metadata\" must be an object") }
            detach = mo["detach"]?.boolValue == true || mo["detach"]?.stringValue == "true"
            job["metadata"] = md
        }
        let stream = o["stream"]?.boolValue ?? false
        if stream && kind == .embedding { throw .badRequest("embeddings cannot be streamed") }
        var base64 = false
        if let f = o["encoding_format"]?.stringValue {
            guard f == "float" || f == "base64" else { throw .badRequest("encoding_format must be float or base64") }
            base64 = f == "base64"
        }
        return OpenAIRequest(
            kind: kind, mode: mode, model: model, stream: stream,
            includeUsage: o["stream_options"]?["include_usage"]?.boolValue ?? false,
            detach: detach, base64: base64, timeoutS: o["timeout_s"]?.doubleValue, job: job)
    }
}
