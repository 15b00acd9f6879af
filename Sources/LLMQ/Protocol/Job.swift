import Foundation

/// One completion job as a producer pushed it (PROTOCOL.md, "A job").
public struct Job: Sendable {
    public var id: String
    public var model: String
    public var mode: String
    /// Chat messages as given (OpenAI style); providers map them to their own form.
    public var messages: [JSONValue]
    public var prompt: String?
    public var input: [String]
    public var params: Params
    public var timeoutS: Double?
    public var deadline: Double?
    public var maxAttempts: Int?
    public var metadata: JSONValue?
    public var traceparent: String?
    /// Attempts already started by earlier workers (written by llmq when it puts a job back).
    public var attempts: Int
    /// The exact bytes taken from the queue, needed to remove the job from the in-flight list.
    public var raw: [UInt8]

    public struct Params: Sendable {
        public var maxTokens: Int?
        public var temperature: Double?
        public var topP: Double?
        public var stop: [String]?
        public var seed: Int?
        public var responseFormat: JSONValue?
        public var tools: JSONValue?
        public var toolChoice: JSONValue?
        public var extra: [String: JSONValue]

        public init() { extra = [:] }
    }

    public static let topLevelKeys: Set<String> = [
        "id", "model", "mode", "messages", "prompt", "input", "params", "timeout_s", "deadline",
        "max_attempts", "metadata", "traceparent", "attempts", "tenant",
    ]
    public static let paramKeys: Set<String> = [
        "max_tokens", "temperature", "top_p", "stop", "seed", "response_format", "tools", "tool_choice", "extra",
    ]

    /// Whether `id` may name a request's keys: 1-128 of `A-Z a-z 0-9 . _ : -`.
    public static func isValidID(_ id: String) -> Bool {
        let u = id.utf8
        guard !u.isEmpty, u.count <= 128 else { return false }
        return u.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: ":") || c == UInt8(ascii: "-")
        }
    }
}

/// Why a job was refused before it ran, with the id when one could be read.
public struct JobRejection: Error, Sendable {
    public var id: String?
    public var error: LLMQError
}

/// Turns queue bytes into a `Job`, or says precisely what is wrong with them.
public struct JobParser: Sendable {
    public var maxBytes: Int

    public init(maxBytes: Int = 1 << 20) { self.maxBytes = maxBytes }

    public func parse(_ raw: [UInt8], mode: String) throws(JobRejection) -> Job {
        guard raw.count <= maxBytes else {
            throw reject(nil, "the job is \(raw.count) bytes, over the limit of \(maxBytes); send large inputs by reference")
        }
        let value: JSONValue
        do {
            value = try JSONValue.parse(raw)
        } catch {
            throw reject(Self.salvageID(raw), "the job is not valid JSON (UTF-8 text, one object): \(error)")
        }
        guard case .object(let o) = value else {
            throw reject(nil, "the job must be a JSON object, got \(value.typeName)")
        }
        let idValue = o["id"]
        guard let idValue else { throw reject(nil, "the job has no \"id\"; give every job a unique id") }
        guard let id = idValue.stringValue else { throw reject(nil, "\"id\" must be a string, got \(idValue.typeName)") }
        guard Job.isValidID(id) else {
            throw reject(nil, "\"id\" \(JSONValue.string(String(id.prefix(140))).jsonString) is not 1-128 characters of A-Z a-z 0-9 . _ : -")
        }
        func fail(_ message: String) -> JobRejection { reject(id, message) }

        if let unknown = o.keys.filter({ !Job.topLevelKeys.contains($0) }).sorted().first {
            throw fail("unknown field \"\(unknown)\"; put provider-specific options under params.extra")
        }
        guard let modelValue = o["model"] else { throw fail("the job has no \"model\"; name a route or PROVIDER/MODEL") }
        guard let model = modelValue.stringValue, !model.isEmpty else {
            throw fail("\"model\" must be a non-empty string, got \(modelValue.typeName)")
        }
        if let m = o["mode"] {
            guard let ms = m.stringValue else { throw fail("\"mode\" must be a string, got \(m.typeName)") }
            guard ms == mode else { throw fail("\"mode\" is \"\(ms)\" but the job was pushed on the \"\(mode)\" queue") }
        }
        var job = Job(
            id: id, model: model, mode: mode, messages: [], prompt: nil, input: [], params: .init(),
            timeoutS: nil, deadline: nil, maxAttempts: nil, metadata: nil, traceparent: nil, attempts: 0, raw: raw)

        if let m = o["messages"] {
            guard let list = m.arrayValue else { throw fail("\"messages\" must be a list, got \(m.typeName)") }
            for (i, msg) in list.enumerated() {
                guard let mo = msg.objectValue else { throw fail("messages[\(i)] must be an object with role and content") }
                guard let role = mo["role"]?.stringValue else { throw fail("messages[\(i)].role must be a string") }
                guard ["system", "user", "assistant", "tool", "developer"].contains(role) else {
                    throw fail("messages[\(i)].role \"\(role)\" is not one of system, user, assistant, tool, developer")
                }
                switch mo["content"] {
                case .string?, .array?: break
                case .null?, nil:
                    if role != "assistant" { throw fail("messages[\(i)].content is missing; give a string or a list of parts") }
                case let other?: throw fail("messages[\(i)].content must be a string or a list of parts, got \(other.typeName)")
                }
            }
            job.messages = list
        }
        if let p = o["prompt"] {
            guard let s = p.stringValue else { throw fail("\"prompt\" must be a string, got \(p.typeName)") }
            job.prompt = s
        }
        if let inp = o["input"] {
            switch inp {
            case .string(let s): job.input = [s]
            case .array(let a):
                job.input = try a.enumerated().map { i, v throws(JobRejection) in
                    guard let s = v.stringValue else { throw fail("input[\(i)] must be a string, got \(v.typeName)") }
                    return s
                }
                if job.input.isEmpty { throw fail("\"input\" is an empty list") }
            default: throw fail("\"input\" must be a string or a list of strings, got \(inp.typeName)")
            }
        }
        switch mode {
        case "chat":
            if job.messages.isEmpty {
                if let prompt = job.prompt {
                    job.messages = [["role": "user", "content": .string(prompt)]]
                } else {
                    throw fail("a chat job needs \"messages\", a non-empty list of {role, content}")
                }
            }
        case "complete":
            if job.prompt == nil { throw fail("a complete job needs \"prompt\", a string") }
        case "embed":
            if job.input.isEmpty { throw fail("an embed job needs \"input\", a string or a list of strings") }
        default: break
        }
        if let p = o["params"] { job.params = try parseParams(p, fail: fail) }
        job.timeoutS = try positiveNumber(o, "timeout_s", fail: fail)
        job.deadline = try positiveNumber(o, "deadline", fail: fail)
        if let v = o["max_attempts"] {
            guard let n = v.intValue, n >= 1 else { throw fail("\"max_attempts\" must be a whole number of at least 1") }
            job.maxAttempts = n
        }
        if let v = o["attempts"] {
            guard let n = v.intValue, n >= 0 else { throw fail("\"attempts\" must be a whole number of at least 0") }
            job.attempts = n
        }
        if let v = o["metadata"] {
            guard v.objectValue != nil else { throw fail("\"metadata\" must be an object, got \(v.typeName)") }
            job.metadata = v
        }
        if let v = o["traceparent"] {
            guard let s = v.stringValue else { throw fail("\"traceparent\" must be a string") }
            job.traceparent = s
        }
        return job
    }

    private func parseParams(_ p: JSONValue, fail: (String) -> JobRejection) throws(JobRejection) -> Job.Params {
        guard let o = p.objectValue else { throw fail("\"params\" must be an object, got \(p.typeName)") }
        if let unknown = o.keys.filter({ !Job.paramKeys.contains($0) }).sorted().first {
            throw fail("unknown parameter params.\(unknown); pass provider-specific options under params.extra")
        }
        var r = Job.Params()
        if let v = o["max_tokens"] {
            guard let n = v.intValue, n >= 1 else { throw fail("params.max_tokens must be a whole number of at least 1") }
            r.maxTokens = n
        }
        if let v = o["temperature"] {
            guard let d = v.doubleValue, d >= 0 else { throw fail("params.temperature must be a number of at least 0") }
            r.temperature = d
        }
        if let v = o["top_p"] {
            guard let d = v.doubleValue, d >= 0, d <= 1 else { throw fail("params.top_p must be a number from 0 to 1") }
            r.topP = d
        }
        if let v = o["stop"] {
            switch v {
            case .string(let s): r.stop = [s]
            case .array(let a) where a.allSatisfy({ $0.stringValue != nil }): r.stop = a.compactMap(\.stringValue)
            default: throw fail("params.stop must be a string or a list of strings")
            }
        }
        if let v = o["seed"] {
            guard let n = v.intValue else { throw fail("params.seed must be a whole number") }
            r.seed = n
        }
        if let v = o["response_format"] {
            guard v.objectValue != nil else { throw fail("params.response_format must be an object") }
            r.responseFormat = v
        }
        if let v = o["tools"] {
            guard v.arrayValue != nil else { throw fail("params.tools must be a list") }
            r.tools = v
        }
        if let v = o["tool_choice"] { r.toolChoice = v }
        if let v = o["extra"] {
            guard let e = v.objectValue else { throw fail("params.extra must be an object") }
            r.extra = e
        }
        return r
    }

    private func positiveNumber(_ o: [String: JSONValue], _ key: String, fail: (String) -> JobRejection) throws(JobRejection) -> Double? {
        guard let v = o[key] else { return nil }
        guard let d = v.doubleValue, d > 0 else { throw fail("\"\(key)\" must be a number greater than 0, got \(v.jsonString)") }
        return d
    }

    private func reject(_ id: String?, _ message: String) -> JobRejection {
        JobRejection(id: id, error: .invalidJob(message))
    }

    /// Best effort: reads `"id":"…"` from text that is not valid JSON, so the
    /// producer still hears about it on its channel when the id is sane.
    static func salvageID(_ raw: [UInt8]) -> String? {
        guard raw.count <= 1 << 20 else { return nil }
        let text = String(decoding: raw, as: UTF8.self)
        guard let r = text.range(of: #""id"\s*:\s*"([A-Za-z0-9._:-]{1,128})""#, options: .regularExpression) else { return nil }
        let match = text[r]
        guard let q = match.dropLast().lastIndex(of: "\"") else { return nil }
        let id = String(match[match.index(after: q)..<match.index(before: match.endIndex)])
        return Job.isValidID(id) ? id : nil
    }
}
