import CoreMetrics
import Synchronization

// Handles the per-job metrics record into, made once per label set. Making a
// handle looks it up in the backend's registry under the registry's lock, which
// was about nine lookups per job on the hot path.

struct RequestHandles: Sendable {
    let requests: Counter
    let duration: Timer
    let ttft: Timer
    let tokensIn: Counter
    let tokensOut: Counter

    private struct Key: Hashable {
        let mode: Mode
        let provider: String
        let model: String
        let outcome: String
    }

    private static let made = Mutex<[Key: RequestHandles]>([:])

    static func `for`(mode: Mode, provider: String, model: String, outcome: String) -> RequestHandles {
        let key = Key(mode: mode, provider: provider, model: model, outcome: outcome)
        if let h = made.withLock({ $0[key] }) { return h }
        let dims = [("mode", mode.rawValue), ("provider", provider), ("model", model)]
        let perProvider = [("mode", mode.rawValue), ("provider", provider)]
        let h = RequestHandles(
            requests: Counter(label: "llmq_requests_total", dimensions: dims + [("outcome", outcome)]),
            duration: Timer(label: "llmq_request_duration_seconds", dimensions: perProvider, preferredDisplayUnit: .seconds),
            ttft: Timer(label: "llmq_time_to_first_token_seconds", dimensions: perProvider, preferredDisplayUnit: .seconds),
            tokensIn: Counter(label: "llmq_tokens_in_total", dimensions: dims),
            tokensOut: Counter(label: "llmq_tokens_out_total", dimensions: dims))
        made.withLock { $0[key] = h }
        return h
    }
}

enum DispatchHandles {
    private static let made = Mutex<[Mode: Timer]>([:])

    static func `for`(_ mode: Mode) -> Timer {
        if let h = made.withLock({ $0[mode] }) { return h }
        let h = Timer(label: "llmq_dispatch_seconds", dimensions: [("mode", mode.rawValue)], preferredDisplayUnit: .seconds)
        made.withLock { $0[mode] = h }
        return h
    }
}

struct PermitHandles: Sendable {
    let inUse: Gauge
    let free: Gauge

    private static let made = Mutex<[Mode: PermitHandles]>([:])

    static func `for`(_ mode: Mode) -> PermitHandles {
        if let h = made.withLock({ $0[mode] }) { return h }
        let h = PermitHandles(
            inUse: Gauge(label: "llmq_inflight_jobs", dimensions: [("mode", mode.rawValue)]),
            free: Gauge(label: "llmq_permits_free", dimensions: [("mode", mode.rawValue)]))
        made.withLock { $0[mode] = h }
        return h
    }
}
