import Foundation

/// Writes the NDJSON event lines of one request (PROTOCOL.md, "Events") and
/// keeps what its result needs.
///
/// Thread rules: while the request's upstream transfer runs, only the HTTP
/// engine thread touches a writer; otherwise only the job's task does. The
/// hand-over happens through the transfer's continuation, which orders the two.
/// Hence `@unchecked Sendable`.
public final class EventWriter: @unchecked Sendable {
    public let id: String
    let quotedID: [UInt8]
    /// Lines written and not yet handed to the publisher.
    public private(set) var pending: [UInt8] = []
    /// Byte offsets in `pending` where each line starts.
    public private(set) var lineStarts: [Int] = []
    public private(set) var seq = 0
    /// Whether output (`chunk`, `tool_call`, `embedding`) went out in this attempt.
    public private(set) var outputSent = false
    /// Whether anything at all (a `start`) was written in this attempt.
    public private(set) var started = false
    /// The generated text, still JSON-escaped, for the result key.
    public private(set) var textEscaped: [UInt8] = []
    public private(set) var toolCalls: [ToolCallState] = []
    /// Tool-call index → position in `toolCalls`.
    private var toolSlots: [Int: Int] = [:]
    /// Bytes of output that count against `maxOutputBytes`: escaped text, and tool calls' arguments, ids and names.
    public private(set) var outputBytes = 0
    public var embeddingCount = 0
    var startLine: [UInt8] = []
    var chunkPrefix: [UInt8] = []
    public private(set) var firstOutputAt: UInt64?

    public struct ToolCallState: Sendable {
        public var index: Int
        public var callID: String
        public var name: String
        public var argumentsEscaped: [UInt8]
    }

    /// Largest answer accepted, bytes of escaped text and tool calls (arguments, ids, names).
    public let maxOutputBytes: Int
    /// Most distinct tool calls one answer may carry.
    public static let maxToolCalls = 1024
    /// Whether the answer outgrew `maxOutputBytes` or `maxToolCalls`; the transfer is then cut.
    public var exceeded: Bool { outputBytes > maxOutputBytes || toolCalls.count > Self.maxToolCalls }

    public init(id: String, maxOutputBytes: Int = Int.max) {
        self.id = id
        self.maxOutputBytes = maxOutputBytes
        var q: [UInt8] = []
        JSONWriter.appendQuoted(id, to: &q)
        quotedID = q
        pending.reserveCapacity(1024)
        chunkPrefix = Array(#"{"type":"chunk","id":"#.utf8) + quotedID + Array(#","seq":"#.utf8)
    }

    /// Prepares the `start` line of a new attempt; it goes out with the first
    /// output or terminal event, so silent retries and fallbacks leave no trace.
    public func beginAttempt(attempt: Int, worker: String, provider: String, model: String, metadata: JSONValue?) {
        seq = 0
        started = false
        outputSent = false
        textEscaped.removeAll(keepingCapacity: true)
        toolCalls.removeAll()
        toolSlots.removeAll()
        outputBytes = 0
        embeddingCount = 0
        firstOutputAt = nil
        var l = header("start")
        field(&l, "attempt", attempt)
        field(&l, "worker", worker)
        field(&l, "provider", provider)
        field(&l, "model", model)
        l.append(contentsOf: #","metadata":"#.utf8)
        (metadata ?? .object([:])).write(into: &l)
        startLine = l
    }

    /// Continues an attempt another process began, whose last line had `lastSeq`,
    /// so a `retry` or terminal event written now follows it without a gap.
    public func resumeAttempt(lastSeq: Int) {
        seq = lastSeq + 1
        started = true
        outputSent = true
    }

    private func ensureStarted() {
        if started { return }
        started = true
        beginLine()
        pending.append(contentsOf: startLine)
        endLine()
    }

    private func markOutput() {
        if !outputSent {
            outputSent = true
            firstOutputAt = Clock.nowNanos()
        }
    }

    @inline(__always) private func beginLine() { lineStarts.append(pending.count) }
    @inline(__always) private func endLine() {
        pending.append(UInt8(ascii: "}"))
        pending.append(0x0A)
        seq += 1
    }

    private func header(_ type: StaticString) -> [UInt8] {
        var l: [UInt8] = []
        l.reserveCapacity(160)
        l.append(contentsOf: #"{"type":""#.utf8)
        l.append(contentsOf: UnsafeBufferPointer(start: type.utf8Start, count: type.utf8CodeUnitCount))
        l.append(contentsOf: #"","id":"#.utf8)
        l.append(contentsOf: quotedID)
        l.append(contentsOf: #","seq":"#.utf8)
        JSONWriter.appendInt(seq, to: &l)
        return l
    }

    private func field(_ l: inout [UInt8], _ key: StaticString, _ value: String) {
        l.append(UInt8(ascii: ","))
        l.append(UInt8(ascii: "\""))
        l.append(contentsOf: UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
        l.append(contentsOf: #"":"#.utf8)
        JSONWriter.appendQuoted(value, to: &l)
    }

    private func field(_ l: inout [UInt8], _ key: StaticString, _ value: Int) {
        l.append(UInt8(ascii: ","))
        l.append(UInt8(ascii: "\""))
        l.append(contentsOf: UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
        l.append(contentsOf: #"":"#.utf8)
        JSONWriter.appendInt(value, to: &l)
    }

    private func emit(_ line: [UInt8]) {
        beginLine()
        pending.append(contentsOf: line)
        endLine()
    }

    /// A `chunk` whose text is already a valid JSON string body (escaped).
    public func chunk(escaped text: UnsafeBufferPointer<UInt8>) {
        guard !text.isEmpty else { return }
        ensureStarted()
        markOutput()
        beginLine()
        pending.append(contentsOf: chunkPrefix)
        JSONWriter.appendInt(seq, to: &pending)
        pending.append(contentsOf: #","text":""#.utf8)
        pending.append(contentsOf: text)
        pending.append(UInt8(ascii: "\""))
        endLine()
        textEscaped.append(contentsOf: text)
        outputBytes &+= text.count
    }

    public func chunk(text: String) {
        var b: [UInt8] = []
        JSONWriter.appendEscaped(text, to: &b)
        b.withUnsafeBufferPointer { chunk(escaped: $0) }
    }

    /// A piece of a tool call; `id` and `name` come with the first piece of an index.
    public func toolCall(index: Int, callID: String?, name: String?, argumentsEscaped: UnsafeBufferPointer<UInt8>) {
        ensureStarted()
        markOutput()
        outputBytes &+= argumentsEscaped.count &+ (callID?.utf8.count ?? 0) &+ (name?.utf8.count ?? 0)
        let state: ToolCallState
        if let k = toolSlots[index] {
            if let callID, !callID.isEmpty { toolCalls[k].callID = callID }
            if let name, !name.isEmpty { toolCalls[k].name = name }
            toolCalls[k].argumentsEscaped.append(contentsOf: argumentsEscaped)
            state = toolCalls[k]
        } else {
            state = ToolCallState(index: index, callID: callID ?? "", name: name ?? "", argumentsEscaped: Array(argumentsEscaped))
            toolSlots[index] = toolCalls.count
            toolCalls.append(state)
        }
        var l = header("tool_call")
        field(&l, "index", index)
        field(&l, "call_id", callID ?? state.callID)
        field(&l, "name", name ?? state.name)
        l.append(contentsOf: #","arguments":""#.utf8)
        l.append(contentsOf: argumentsEscaped)
        l.append(UInt8(ascii: "\""))
        emit(l)
    }

    /// One `embedding` event; `vector` is a JSON array's text.
    public func embedding(index: Int, vectorJSON: UnsafeBufferPointer<UInt8>) {
        ensureStarted()
        markOutput()
        embeddingCount += 1
        var l = header("embedding")
        field(&l, "index", index)
        l.append(contentsOf: #","vector":"#.utf8)
        l.append(contentsOf: vectorJSON)
        emit(l)
    }

    /// Announces that this attempt was abandoned after output went out.
    /// `retryIn`: seconds until the next attempt may start, when the job waits for it in the delayed set.
    public func retry(nextAttempt: Int, reason: String, retryIn: Double? = nil) {
        guard outputSent || started else { return }
        var l = header("retry")
        field(&l, "attempt", nextAttempt)
        field(&l, "reason", reason)
        if let retryIn, retryIn.isFinite {
            l.append(contentsOf: #","retry_in_s":"#.utf8)
            JSONWriter.appendMillis(min(max(0, retryIn), 1e7), to: &l)
        }
        emit(l)
    }

    public func done(_ outcome: Outcome) {
        ensureStarted()
        var l = header("done")
        field(&l, "finish_reason", outcome.finishReason)
        l.append(contentsOf: #","usage":"#.utf8)
        outcome.usage.write(into: &l)
        l.append(contentsOf: #","ttft_ms":"#.utf8)
        if let t = outcome.ttftMs { JSONWriter.appendMillis(t, to: &l) } else { l.append(contentsOf: "null".utf8) }
        l.append(contentsOf: #","duration_ms":"#.utf8)
        JSONWriter.appendMillis(outcome.durationMs, to: &l)
        l.append(contentsOf: #","metadata":"#.utf8)
        (outcome.metadata ?? .object([:])).write(into: &l)
        emit(l)
    }

    public func error(_ e: LLMQError, attempt: Int) {
        if started || !startLine.isEmpty { ensureStarted() }
        var l = header("error")
        field(&l, "code", e.code.rawValue)
        field(&l, "message", e.message)
        l.append(contentsOf: #","retryable":"#.utf8)
        l.append(contentsOf: (e.retryable ? "true" : "false").utf8)
        field(&l, "attempt", attempt)
        emit(l)
    }

    /// Hands the pending lines to `body` and forgets them.
    public func takePending(_ body: (_ payload: UnsafeBufferPointer<UInt8>, _ lineStarts: [Int]) -> Void) {
        guard !pending.isEmpty else { return }
        pending.withUnsafeBufferPointer { body($0, lineStarts) }
        pending.removeAll(keepingCapacity: true)
        lineStarts.removeAll(keepingCapacity: true)
    }

    public var hasPending: Bool { !pending.isEmpty }

    /// The generated text, decoded.
    public var text: String {
        var b: [UInt8] = [UInt8(ascii: "\"")]
        b.append(contentsOf: textEscaped)
        b.append(UInt8(ascii: "\""))
        return (try? JSONValue.parse(b).stringValue) ?? ""
    }
}

/// How a successful request ended.
public struct Outcome: Sendable {
    public var finishReason: String
    public var usage: Usage
    public var ttftMs: Double?
    public var durationMs: Double
    public var metadata: JSONValue?

    public init(finishReason: String, usage: Usage, ttftMs: Double?, durationMs: Double, metadata: JSONValue?) {
        self.finishReason = finishReason
        self.usage = usage
        self.ttftMs = ttftMs
        self.durationMs = durationMs
        self.metadata = metadata
    }
}

public struct Usage: Sendable, Equatable {
    public var promptTokens: Int?
    public var completionTokens: Int?

    public init(promptTokens: Int? = nil, completionTokens: Int? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }

    /// The largest token count reported (2^40): anything above it is an upstream's nonsense.
    public static let maxCount = 1 << 40

    /// A count within `0...maxCount`.
    public static func clamped(_ n: Int) -> Int { min(max(n, 0), maxCount) }

    /// The sum of counts, saturating at `maxCount`; nil when neither is known.
    public static func sum(_ counts: Int?...) -> Int? {
        var total: Int?
        for c in counts {
            guard let c else { continue }
            let (s, overflow) = (total ?? 0).addingReportingOverflow(clamped(c))
            total = overflow ? maxCount : clamped(s)
        }
        return total
    }

    func write(into l: inout [UInt8]) {
        l.append(contentsOf: #"{"prompt_tokens":"#.utf8)
        if let p = promptTokens { JSONWriter.appendInt(p, to: &l) } else { l.append(contentsOf: "null".utf8) }
        l.append(contentsOf: #","completion_tokens":"#.utf8)
        if let c = completionTokens { JSONWriter.appendInt(c, to: &l) } else { l.append(contentsOf: "null".utf8) }
        l.append(UInt8(ascii: "}"))
    }

    public var json: JSONValue {
        ["prompt_tokens": promptTokens.map { .int($0) } ?? .null, "completion_tokens": completionTokens.map { .int($0) } ?? .null]
    }
}

public enum Clock {
    @inline(__always) public static func nowNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func millis(since start: UInt64, to end: UInt64 = nowNanos()) -> Double {
        Double(end &- start) / 1_000_000
    }

    public static func unixTime() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
