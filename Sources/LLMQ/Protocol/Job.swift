import Foundation

/// One completion job as a producer pushed it (PROTOCOL.md, "A job").
public struct Job: Sendable {
    public var id: String
    public var model: String
    public var mode: Mode
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
    /// 1.1: Unix time in seconds before which the job must not start; it waits in the delayed set until then.
    public var notBefore: Double?
    /// 1.1: who the job is for (per-tenant limits, fair share and metrics): 1-64 characters of the id charset.
    public var tenant: String?
    /// 1.1: order within a mode; `normal` when the job does not say.
    public var priority: Priority = .normal
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
        /// Embed jobs: false bypasses the embedding cache (neither read nor written).
        public var cache: Bool = true

        public init() { extra = [:] }
    }

    /// 1.1: `high`, `normal` or `low`, within one mode.
    public enum Priority: String, Sendable, CaseIterable {
        case high, normal, low
    }

    public static let topLevelKeys: Set<String> = [
        "id", "model", "mode", "messages", "prompt", "input", "params", "timeout_s", "deadline",
        "max_attempts", "metadata", "traceparent", "attempts", "not_before", "tenant", "priority",
    ]
    public static let paramKeys: Set<String> = [
        "max_tokens", "temperature", "top_p", "stop", "seed", "response_format", "tools", "tool_choice", "extra", "cache",
    ]

    /// Whether `id` may name a request's keys: 1-128 of `A-Z a-z 0-9 . _ : -`.
    public static func isValidID(_ id: String) -> Bool { isIDText(id, maxLength: 128) }

    /// Whether `tenant` is 1-64 characters of the id charset (it becomes a metric label and a key part).
    public static func isValidTenant(_ tenant: String) -> Bool { isIDText(tenant, maxLength: 64) }

    static func isIDText(_ s: String, maxLength: Int) -> Bool {
        let u = s.utf8
        guard !u.isEmpty, u.count <= maxLength else { return false }
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
///
/// Hostile input is the normal case here: every number is checked to be finite
/// and within the range `Limits` documents, keys may appear once per object,
/// strings that reach headers, URLs, logs or metric labels hold no control
/// characters, and nothing a producer sends can make the parser trap.
public struct JobParser: Sendable {
    public var maxBytes: Int

    /// The ranges a job's numbers must fall in (PROTOCOL.md: "every number must be
    /// finite and within the range its field documents"); README and Schemas/job.schema.json list the same.
    public enum Limits {
        /// `timeout_s`: more than 0, at most one day.
        public static let timeoutS: ClosedRange<Double> = 0...86_400
        /// `deadline` and `not_before`: Unix seconds up to 1e10 (year 2286); larger ones are milliseconds by mistake.
        public static let unixSeconds: ClosedRange<Double> = 0...10_000_000_000
        public static let maxAttempts: ClosedRange<Int> = 1...100
        public static let attempts: ClosedRange<Int> = 0...10_000
        public static let maxTokens: ClosedRange<Int> = 1...16_777_216
        public static let temperature: ClosedRange<Double> = 0...10
        public static let topP: ClosedRange<Double> = 0...1
        /// `seed`: integers a double holds exactly (±2^53), so every JSON reader sees the same seed.
        public static let seed: ClosedRange<Int> = -9_007_199_254_740_992...9_007_199_254_740_992
        /// Longest `model`, in bytes.
        public static let modelBytes = 256
        /// How much of a job `peekID` reads.
        public static let idPrefixBytes = 4096
    }

    public init(maxBytes: Int = 1 << 20) { self.maxBytes = maxBytes }

    /// `parse` as a value, for a fetcher that parses each job once as it takes it
    /// (for `not_before`, `deadline`, the cancel check) and hands the outcome to the runner.
    public func outcome(_ raw: [UInt8], mode: Mode) -> Result<Job, JobRejection> {
        do { return .success(try parse(raw, mode: mode)) } catch { return .failure(error) }
    }

    public func parse(_ raw: [UInt8], mode: Mode) throws(JobRejection) -> Job {
        guard raw.count <= maxBytes else {
            throw reject(
                Self.peekID(raw),
                "the job is \(raw.count) bytes, over the limit of \(maxBytes) bytes (max_job_bytes); send large inputs by reference")
        }
        let value: JSONValue
        let duplicate: String?
        do {
            (value, duplicate) = try JSONValue.parseReportingDuplicates(raw)
        } catch {
            throw reject(Self.peekID(raw), "the job is not valid JSON (UTF-8 text, one object): \(error)")
        }
        guard case .object(let o) = value else {
            throw reject(nil, "the job must be a JSON object, got \(value.typeName)")
        }
        if duplicate == "id" { throw reject(nil, "the job has \"id\" more than once; give it exactly one") }
        let idValue = o["id"]
        guard let idValue else { throw reject(nil, "the job has no \"id\"; give every job a unique id") }
        guard let id = idValue.stringValue else { throw reject(nil, "\"id\" must be a string, got \(idValue.typeName)") }
        guard Job.isValidID(id) else {
            throw reject(nil, "\"id\" \(JSONValue.string(String(id.prefix(140))).jsonString) is not 1-128 characters of A-Z a-z 0-9 . _ : -")
        }
        func fail(_ message: String) -> JobRejection { reject(id, message) }

        if let duplicate {
            throw fail("the key \(JSONValue.string(String(duplicate.prefix(64))).jsonString) appears twice in one object; give each key once")
        }
        if let unknown = o.keys.filter({ !Job.topLevelKeys.contains($0) }).sorted().first {
            throw fail("unknown field \(Self.quoted(unknown)); put provider-specific options under params.extra")
        }
        guard let modelValue = o["model"] else { throw fail("the job has no \"model\"; name a route or PROVIDER/MODEL") }
        guard let model = modelValue.stringValue, !model.isEmpty else {
            throw fail("\"model\" must be a non-empty string, got \(modelValue.typeName)")
        }
        guard model.utf8.count <= Limits.modelBytes, !Self.hasControlCharacters(model) else {
            throw fail("\"model\" must be at most \(Limits.modelBytes) bytes without control characters; name a route or PROVIDER/MODEL")
        }
        if let m = o["mode"] {
            guard let ms = m.stringValue else { throw fail("\"mode\" must be a string, got \(m.typeName)") }
            guard ms == mode.rawValue else { throw fail("\"mode\" is \(Self.quoted(ms)) but the job was pushed on the \"\(mode)\" queue") }
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
                    throw fail("messages[\(i)].role \(Self.quoted(role)) is not one of system, user, assistant, tool, developer")
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
        case .chat:
            if job.messages.isEmpty {
                if let prompt = job.prompt {
                    job.messages = [["role": "user", "content": .string(prompt)]]
                } else {
                    throw fail("a chat job needs \"messages\", a non-empty list of {role, content}")
                }
            }
        case .complete:
            if job.prompt == nil { throw fail("a complete job needs \"prompt\", a string") }
        case .embed:
            if job.input.isEmpty { throw fail("an embed job needs \"input\", a string or a list of strings") }
        default: break
        }
        if let p = o["params"] { job.params = try parseParams(p, fail: fail) }
        job.timeoutS = try number(o["timeout_s"], "\"timeout_s\"", in: Limits.timeoutS, excludingLower: true, unit: "seconds", fail: fail)
        job.deadline = try unixTime(o["deadline"], "deadline", fail: fail)
        job.notBefore = try unixTime(o["not_before"], "not_before", fail: fail)
        job.maxAttempts = try integer(o["max_attempts"], "\"max_attempts\"", in: Limits.maxAttempts, fail: fail)
        job.attempts = try integer(o["attempts"], "\"attempts\"", in: Limits.attempts, fail: fail) ?? 0
        if let v = o["metadata"] {
            guard v.objectValue != nil else { throw fail("\"metadata\" must be an object, got \(v.typeName)") }
            job.metadata = v
        }
        if let v = o["traceparent"] {
            // It becomes an HTTP header of a request that carries the provider's key: only a well-formed one passes.
            guard let s = v.stringValue, TraceContext(traceparent: s) != nil else {
                throw fail("\"traceparent\" must be a W3C trace context such as \"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"")
            }
            job.traceparent = s
        }
        if let v = o["tenant"] {
            guard let s = v.stringValue, Job.isValidTenant(s) else {
                throw fail("\"tenant\" must be 1-64 characters of A-Z a-z 0-9 . _ : -")
            }
            job.tenant = s
        }
        if let v = o["priority"] {
            guard let s = v.stringValue, let p = Job.Priority(rawValue: s) else {
                throw fail("\"priority\" must be \"high\", \"normal\" or \"low\"")
            }
            job.priority = p
        }
        return job
    }

    private func parseParams(_ p: JSONValue, fail: (String) -> JobRejection) throws(JobRejection) -> Job.Params {
        guard let o = p.objectValue else { throw fail("\"params\" must be an object, got \(p.typeName)") }
        if let unknown = o.keys.filter({ !Job.paramKeys.contains($0) }).sorted().first {
            throw fail("unknown parameter params.\(String(unknown.prefix(64))); pass provider-specific options under params.extra")
        }
        var r = Job.Params()
        r.maxTokens = try integer(o["max_tokens"], "params.max_tokens", in: Limits.maxTokens, fail: fail)
        r.temperature = try number(o["temperature"], "params.temperature", in: Limits.temperature, fail: fail)
        r.topP = try number(o["top_p"], "params.top_p", in: Limits.topP, fail: fail)
        if let v = o["stop"] {
            switch v {
            case .string(let s): r.stop = [s]
            case .array(let a) where a.allSatisfy({ $0.stringValue != nil }): r.stop = a.compactMap(\.stringValue)
            default: throw fail("params.stop must be a string or a list of strings")
            }
        }
        r.seed = try integer(o["seed"], "params.seed", in: Limits.seed, fail: fail)
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
        if let v = o["cache"] {
            guard let b = v.boolValue else { throw fail("params.cache must be true or false, got \(Self.shown(v))") }
            r.cache = b
        }
        return r
    }

    /// A finite number in `range` (above its lower bound when `excludingLower`).
    private func number(_ v: JSONValue?, _ name: String, in range: ClosedRange<Double>, excludingLower: Bool = false, unit: String = "",
                        fail: (String) -> JobRejection) throws(JobRejection) -> Double? {
        guard let v else { return nil }
        let bounds = excludingLower
            ? "greater than \(Self.text(range.lowerBound)) and at most \(Self.text(range.upperBound))"
            : "from \(Self.text(range.lowerBound)) to \(Self.text(range.upperBound))"
        let what = "\(name) must be a number \(bounds)\(unit.isEmpty ? "" : " " + unit)"
        guard let d = v.doubleValue, d.isFinite, range.contains(d), !(excludingLower && d == range.lowerBound) else {
            throw fail("\(what), got \(Self.shown(v))")
        }
        return d
    }

    /// A whole number in `range`; `3.0` counts as whole, `2^63` and `1e300` are out of range, not a trap.
    private func integer(_ v: JSONValue?, _ name: String, in range: ClosedRange<Int>, fail: (String) -> JobRejection) throws(JobRejection) -> Int? {
        guard let v else { return nil }
        guard let n = v.intValue, range.contains(n) else {
            throw fail("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), got \(Self.shown(v))")
        }
        return n
    }

    private func unixTime(_ v: JSONValue?, _ key: String, fail: (String) -> JobRejection) throws(JobRejection) -> Double? {
        guard let v else { return nil }
        if let d = v.doubleValue, d.isFinite, d > Limits.unixSeconds.upperBound, d <= Limits.unixSeconds.upperBound * 1000 {
            throw fail("\"\(key)\" must be Unix time in seconds, got \(Self.shown(v)), which looks like milliseconds; divide by 1000")
        }
        return try number(v, "\"\(key)\"", in: Limits.unixSeconds, excludingLower: key == "deadline", unit: "(Unix time in seconds)", fail: fail)
    }

    /// A value as it may appear in a message: short, and on one line.
    private static func shown(_ v: JSONValue) -> String {
        var s = v.jsonString
        if case .double(let d) = v, !d.isFinite { s = d > 0 ? "a number too large for a double" : "a number too small for a double" }
        return s.count > 40 ? String(s.prefix(40)) + "…" : s
    }

    private static func quoted(_ s: String) -> String { JSONValue.string(String(s.prefix(64))).jsonString }

    private static func text(_ d: Double) -> String { d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : "\(d)" }

    static func hasControlCharacters(_ s: String) -> Bool { s.utf8.contains { $0 < 0x20 || $0 == 0x7F } }

    private func reject(_ id: String?, _ message: String) -> JobRejection {
        JobRejection(id: id, error: .invalidJob(message))
    }

    /// The job's id, read from its first `Limits.idPrefixBytes` bytes only: the
    /// top-level `"id"` member of an object, found without reading the rest, so
    /// jobs that are too large or broken further on can still be answered on
    /// their channel. Nil when the prefix holds no valid id before the first
    /// malformed byte, or holds `"id"` twice.
    public static func peekID(_ raw: [UInt8]) -> String? {
        raw.withUnsafeBufferPointer { all in
            let s = JSONScanner(UnsafeBufferPointer(rebasing: all.prefix(Limits.idPrefixBytes)))
            var i = 0
            s.skipWS(&i)
            guard i < s.bytes.count, s.bytes[i] == UInt8(ascii: "{") else { return nil }
            i += 1
            var found: String?
            while true {
                s.skipWS(&i)
                guard i < s.bytes.count, s.bytes[i] == UInt8(ascii: "\"") else { return found }
                let keyStart = i
                guard s.skipString(&i) else { return found }
                let key = (keyStart + 1)..<(i - 1)
                s.skipWS(&i)
                guard i < s.bytes.count, s.bytes[i] == UInt8(ascii: ":") else { return found }
                i += 1
                s.skipWS(&i)
                let valueStart = i
                guard s.skipValue(&i, depth: 0) else { return found }
                if s.equals(key, "id") || (s.raw(key).contains(UInt8(ascii: "\\")) && s.unescape(key) == "id") {
                    guard found == nil else { return nil }
                    guard let id = s.string(valueStart..<i), Job.isValidID(id) else { return nil }
                    found = id
                }
                s.skipWS(&i)
                guard i < s.bytes.count, s.bytes[i] == UInt8(ascii: ",") else { return found }
                i += 1
            }
        }
    }
}
