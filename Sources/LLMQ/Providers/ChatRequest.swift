import Foundation

/// A chat or complete job read once into provider-neutral parts (messages,
/// tools, tool choice, output format), which each provider then writes in its
/// own wire form. Anything a provider cannot express becomes a `bad_request`
/// that names the provider and the field.
///
/// Jobs use OpenAI's shapes (PROTOCOL.md, "A job"), so this is also where
/// those shapes are checked beyond what the job parser knows.
public struct ChatRequest: Sendable {
    public struct Message: Sendable {
        public var role: String
        public var parts: [Part]
        /// Calls the assistant made (assistant messages).
        public var toolCalls: [ToolCall]
        /// The call a `tool` message answers.
        public var toolCallID: String?
        public var name: String?

        /// The text parts joined; images left out.
        public var text: String {
            parts.compactMap { if case .text(let t) = $0 { t } else { nil } }.joined()
        }
    }

    public enum Part: Sendable {
        case text(String)
        /// An image by URL: `data:MEDIA;base64,…` or `http(s)://…`.
        case image(url: String)
    }

    public struct ToolCall: Sendable {
        public var id: String
        public var name: String
        /// JSON text of the arguments, as the job gave it.
        public var arguments: String
    }

    public struct Tool: Sendable {
        public var name: String
        public var description: String?
        /// JSON Schema of the arguments.
        public var parameters: JSONValue?
    }

    public enum ToolChoice: Sendable, Equatable {
        case auto, none, required
        case named(String)
    }

    public enum OutputFormat: Sendable {
        case text
        /// Any JSON object.
        case jsonObject
        case jsonSchema(name: String?, schema: JSONValue, strict: Bool?)
    }

    public var messages: [Message]
    public var tools: [Tool]
    public var toolChoice: ToolChoice?
    public var output: OutputFormat?

    /// Reads a chat job (or a complete job, whose prompt becomes one user message).
    public init(job: Job, provider: String) throws(LLMQError) {
        func bad(_ what: String) -> LLMQError { LLMQError(.badRequest, "\(what) (provider \(provider))") }
        var messages: [Message] = []
        if job.mode == .chat || job.prompt == nil {
            for (i, m) in job.messages.enumerated() {
                guard let o = m.objectValue, let role = o["role"]?.stringValue else { throw bad("messages[\(i)] must be {role, content}") }
                var msg = Message(role: role, parts: [], toolCalls: [], toolCallID: o["tool_call_id"]?.stringValue, name: o["name"]?.stringValue)
                switch o["content"] {
                case .string(let s)?: msg.parts = [.text(s)]
                case .array(let list)?:
                    for (k, part) in list.enumerated() {
                        msg.parts.append(try Self.part(part, at: "messages[\(i)].content[\(k)]", bad: bad))
                    }
                default: break
                }
                if let calls = o["tool_calls"] {
                    guard let list = calls.arrayValue else { throw bad("messages[\(i)].tool_calls must be a list") }
                    for (k, c) in list.enumerated() {
                        guard let f = c["function"], let name = f["name"]?.stringValue else {
                            throw bad("messages[\(i)].tool_calls[\(k)] must be {id, type: function, function: {name, arguments}}")
                        }
                        let args: String
                        switch f["arguments"] {
                        case .string(let s)?: args = s
                        case nil, .null?: args = "{}"
                        case let v?: args = v.jsonString
                        }
                        msg.toolCalls.append(ToolCall(id: c["id"]?.stringValue ?? "call_\(k)", name: name, arguments: args))
                    }
                }
                if role == "tool" && msg.toolCallID == nil { throw bad("messages[\(i)] has role tool but no tool_call_id") }
                messages.append(msg)
            }
        } else {
            messages = [Message(role: "user", parts: [.text(job.prompt ?? "")], toolCalls: [], toolCallID: nil, name: nil)]
        }
        self.messages = messages

        var tools: [Tool] = []
        if let list = job.params.tools?.arrayValue {
            for (i, t) in list.enumerated() {
                guard t["type"]?.stringValue ?? "function" == "function", let f = t["function"], let name = f["name"]?.stringValue, !name.isEmpty else {
                    throw bad("params.tools[\(i)] must be {type: function, function: {name, description?, parameters?}}")
                }
                tools.append(Tool(name: name, description: f["description"]?.stringValue, parameters: f["parameters"]))
            }
        }
        self.tools = tools

        switch job.params.toolChoice {
        case nil, .null?: toolChoice = nil
        case .string("auto")?: toolChoice = .auto
        case .string("none")?: toolChoice = ToolChoice.none
        case .string("required")?, .string("any")?: toolChoice = .required
        case let v?:
            if let name = v["function"]?["name"]?.stringValue ?? v["name"]?.stringValue {
                guard tools.contains(where: { $0.name == name }) else { throw bad("params.tool_choice names \"\(name)\", which is not in params.tools") }
                toolChoice = .named(name)
            } else {
                throw bad("params.tool_choice must be \"auto\", \"none\", \"required\" or {type: function, function: {name}}")
            }
        }
        if toolChoice != nil && toolChoice != ToolChoice.none && tools.isEmpty {
            throw bad("params.tool_choice needs params.tools")
        }

        switch job.params.responseFormat {
        case nil: output = nil
        case let f?:
            switch f["type"]?.stringValue {
            case "text"?: output = .text
            case "json_object"?: output = .jsonObject
            case "json_schema"?:
                guard let js = f["json_schema"], let schema = js["schema"], schema.objectValue != nil else {
                    throw bad("params.response_format of type json_schema needs json_schema.schema, a JSON Schema object")
                }
                output = .jsonSchema(name: js["name"]?.stringValue, schema: schema, strict: js["strict"]?.boolValue)
            default:
                throw bad("params.response_format.type must be text, json_object or json_schema")
            }
        }
    }

    private static func part(_ p: JSONValue, at path: String, bad: (String) -> LLMQError) throws(LLMQError) -> Part {
        if let s = p.stringValue { return .text(s) }
        switch p["type"]?.stringValue {
        case "text"?, "input_text"?:
            guard let t = p["text"]?.stringValue else { throw bad("\(path) of type text needs text") }
            return .text(t)
        case "image_url"?:
            guard let url = p["image_url"]?["url"]?.stringValue ?? p["image_url"]?.stringValue else { throw bad("\(path) of type image_url needs image_url.url") }
            return .image(url: url)
        case let t:
            throw bad("\(path) has type \(t.map { "\"\($0)\"" } ?? "(none)"); llmq maps text and image_url parts to every provider, other parts only to OpenAI-compatible ones")
        }
    }

    /// Every system (and developer) message's text, in order.
    public var systemText: String? {
        let texts = messages.filter { $0.role == "system" || $0.role == "developer" }.map(\.text).filter { !$0.isEmpty }
        return texts.isEmpty ? nil : texts.joined(separator: "\n\n")
    }

    /// The conversation without its system messages.
    public var conversation: [Message] { messages.filter { $0.role != "system" && $0.role != "developer" } }

    /// The name of the function a tool message answers, from the assistant call it refers to.
    public func toolName(for callID: String) -> String? {
        for m in messages { if let c = m.toolCalls.first(where: { $0.id == callID }) { return c.name } }
        return nil
    }

    /// Splits `data:MEDIA;base64,DATA`.
    public static func dataURL(_ url: String) -> (mediaType: String, base64: String)? {
        guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ","), url[..<comma].hasSuffix(";base64") else { return nil }
        let media = url[url.index(url.startIndex, offsetBy: 5)..<comma].dropLast(";base64".count)
        return (String(media.isEmpty ? "application/octet-stream" : media), String(url[url.index(after: comma)...]))
    }

    /// Parses a tool call's arguments text into an object, for providers that take objects.
    static func argumentsObject(_ text: String, provider: String) throws(LLMQError) -> JSONValue {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return .object([:]) }
        guard let v = try? JSONValue.parse(Array(trimmed.utf8)), v.objectValue != nil else {
            throw LLMQError(.badRequest, "a tool call's arguments must be a JSON object for \(provider), got \(trimmed.prefix(80))")
        }
        return v
    }
}

/// Sampling parameters every provider has in some form.
extension Job.Params {
    /// Writes `extra` over `body`, so `params.extra` can set or override anything.
    func mergeExtra(into body: inout [String: JSONValue]) {
        for (k, v) in extra { body[k] = v }
    }
}
