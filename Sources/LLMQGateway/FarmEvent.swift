import LLMQ
import Synchronization

/// One protocol event line, read with the scanner: text, tool-call arguments and vectors stay
/// as escaped JSON bytes so they are copied into OpenAI's chunks without decoding.
enum FarmEvent: Sendable {
    case start
    case chunk(escapedText: [UInt8])
    case toolCall(index: Int, callID: String?, name: String?, escapedArguments: [UInt8])
    case embedding(index: Int, vector: [UInt8])
    case retry
    case done(finishReason: String, promptTokens: Int?, completionTokens: Int?)
    case error(code: String, message: String, retryAfter: Int?)
    case other

    var isTerminal: Bool {
        switch self {
        case .done, .error: true
        default: false
        }
    }

    /// The events of one payload (one or more NDJSON lines); lines that are not JSON are skipped.
    static func parse(payload: [UInt8]) -> [(line: ArraySlice<UInt8>, event: FarmEvent)] {
        var out: [(ArraySlice<UInt8>, FarmEvent)] = []
        var start = 0
        for i in 0...payload.count where i == payload.count || payload[i] == UInt8(ascii: "\n") {
            if i > start {
                let line = payload[start..<i]
                if let e = parse(line: line) { out.append((line, e)) }
            }
            start = i + 1
        }
        return out
    }

    static func parse(line: ArraySlice<UInt8>) -> FarmEvent? {
        line.withUnsafeBufferPointer { b -> FarmEvent? in
            let s = JSONScanner(b)
            guard let root = s.validate(), s.isObject(root), let t = s.member(root, "type") else { return nil }
            func str(_ k: StaticString) -> String? { s.member(root, k).flatMap { s.string($0) } }
            func int(_ k: StaticString) -> Int? { s.member(root, k).flatMap { s.isNull($0) ? nil : s.int($0) } }
            func escaped(_ k: StaticString) -> [UInt8] { s.member(root, k).flatMap { s.stringBody($0) }.map(Array.init) ?? [] }
            if s.equals(t, "\"chunk\"") { return .chunk(escapedText: escaped("text")) }
            if s.equals(t, "\"tool_call\"") {
                return .toolCall(index: int("index") ?? 0, callID: str("call_id"), name: str("name"), escapedArguments: escaped("arguments"))
            }
            if s.equals(t, "\"embedding\"") {
                return .embedding(index: int("index") ?? 0, vector: s.member(root, "vector").map { Array(s.raw($0)) } ?? [])
            }
            if s.equals(t, "\"start\"") { return .start }
            if s.equals(t, "\"retry\"") { return .retry }
            if s.equals(t, "\"done\"") {
                var p: Int?, c: Int?
                if let u = s.member(root, "usage"), s.isObject(u) {
                    p = s.member(u, "prompt_tokens").flatMap { s.isNull($0) ? nil : s.int($0) }
                    c = s.member(u, "completion_tokens").flatMap { s.isNull($0) ? nil : s.int($0) }
                }
                return .done(finishReason: str("finish_reason") ?? "stop", promptTokens: p, completionTokens: c)
            }
            if s.equals(t, "\"error\"") {
                let after = s.member(root, "retry_after_s").flatMap { s.double($0) }.map { Int($0.rounded(.up)) }
                return .error(code: str("code") ?? "internal", message: str("message") ?? "", retryAfter: after)
            }
            return .other
        }
    }
}

/// The events of one request, from its subscription, ending at the terminal event or at a deadline.
///
/// Thread rules: one task at a time reads it (the handler, then the response body it hands over to).
final class EventFeed: @unchecked Sendable {
    let subscription: SubscriptionHub.Subscription
    private var iterator: AsyncStream<[UInt8]>.Iterator
    private var buffered: [FarmEvent] = []
    private var head = 0
    private(set) var ended = false
    let timer: Task<Void, Never>
    private let deadlinePassed: Flag

    /// Whether the feed ended because its deadline passed (else the subscription was lost).
    var timedOut: Bool { deadlinePassed.value.load(ordering: .relaxed) }

    final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    init(_ subscription: SubscriptionHub.Subscription, timeout: Double) {
        self.subscription = subscription
        iterator = subscription.payloads.makeAsyncIterator()
        // Finishing the stream is how the wait ends at the deadline: next() then returns nil.
        let c = subscription.continuation
        let passed = Flag()
        deadlinePassed = passed
        timer = Task {
            try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
            if !Task.isCancelled {
                passed.value.store(true, ordering: .relaxed)
                c.finish()
            }
        }
    }

    /// The next event; nil when the stream ended without a terminal event (deadline, or Redis lost).
    func next() async -> FarmEvent? {
        while head >= buffered.count {
            if ended { return nil }
            guard let payload = await iterator.next() else {
                ended = true
                return nil
            }
            buffered = FarmEvent.parse(payload: payload).map(\.event)
            head = 0
        }
        let e = buffered[head]
        head += 1
        if e.isTerminal { ended = true }
        return e
    }
}
