import CoreMetrics
import Synchronization

// Handles the per-job metrics record into, made once per label set. Making a
// handle looks it up in the backend's registry under the registry's lock, which
// was about nine lookups per job on the hot path.

/// Handles made once per key and kept.
final class HandleCache<Key: Hashable & Sendable, Handles: Sendable>: Sendable {
    private let made = Mutex<[Key: Handles]>([:])
    private let make: @Sendable (Key) -> Handles

    init(_ make: @escaping @Sendable (Key) -> Handles) { self.make = make }

    subscript(_ key: Key) -> Handles {
        if let h = made.withLock({ $0[key] }) { return h }
        let h = make(key)
        made.withLock { $0[key] = h }
        return h
    }
}

struct RequestHandles: Sendable {
    let requests: Counter
    let duration: Timer
    let ttft: Timer
    let tokensIn: Counter
    let tokensOut: Counter

    struct Key: Hashable, Sendable {
        let mode: Mode
        let provider: String
        let model: String
        let outcome: String
    }

    static let cache = HandleCache<Key, RequestHandles> { k in
        let dims = [("mode", k.mode.rawValue), ("provider", k.provider), ("model", k.model)]
        let perProvider = [("mode", k.mode.rawValue), ("provider", k.provider)]
        return RequestHandles(
            requests: Counter(label: "llmq_requests_total", dimensions: dims + [("outcome", k.outcome)]),
            duration: Timer(label: "llmq_request_duration_seconds", dimensions: perProvider, preferredDisplayUnit: .seconds),
            ttft: Timer(label: "llmq_time_to_first_token_seconds", dimensions: perProvider, preferredDisplayUnit: .seconds),
            tokensIn: Counter(label: "llmq_tokens_in_total", dimensions: dims),
            tokensOut: Counter(label: "llmq_tokens_out_total", dimensions: dims))
    }
}

struct PermitHandles: Sendable {
    let inUse: Gauge
    let free: Gauge

    static let cache = HandleCache<Mode, PermitHandles> { mode in
        PermitHandles(
            inUse: Gauge(label: "llmq_inflight_jobs", dimensions: [("mode", mode.rawValue)]),
            free: Gauge(label: "llmq_permits_free", dimensions: [("mode", mode.rawValue)]))
    }
}

enum DispatchHandles {
    static let cache = HandleCache<Mode, Timer> { mode in
        Timer(label: "llmq_dispatch_seconds", dimensions: [("mode", mode.rawValue)], preferredDisplayUnit: .seconds)
    }
}
