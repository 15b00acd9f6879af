import Foundation
import Logging

/// The farm's shared provider cooldowns, as one worker sees them.
///
/// A cooldown is a key `PREFIX:cooldown:PROVIDER` with a millisecond expiry
/// (`PX`); while it exists, every worker skips that provider (falling back to
/// the route's next target). A worker starts or extends one when the provider
/// answers 429 (for the Retry-After or reset headers' time, else `cooldown_s`,
/// at most `cooldown_max_s`), or when `failures_before_cooldown` failures in a
/// row (5xx, connect errors, timeouts) were counted across the farm in
/// `PREFIX:failures:PROVIDER`. A success resets that count.
///
/// Lookups are local and cheap: a background thread with its own Redis
/// connection reads every provider's remaining time (`PTTL`, pipelined) about
/// every 200 ms, and sends the reports. If Redis is unreachable the worker
/// still honours what it learnt itself.
///
/// Thread rules: `remaining` and `record` from any thread; Redis only on the
/// board's thread, which owns its connection. State is guarded by `condition`.
public final class CooldownBoard: @unchecked Sendable {  // all mutable state is guarded by `condition`
    public struct Policy: Sendable, Equatable {
        public var cooldownS: Double
        public var cooldownMaxS: Double
        public var failuresBeforeCooldown: Int

        public init(cooldownS: Double, cooldownMaxS: Double, failuresBeforeCooldown: Int) {
            self.cooldownS = cooldownS
            self.cooldownMaxS = cooldownMaxS
            self.failuresBeforeCooldown = failuresBeforeCooldown
        }

        public init(_ c: ProviderConfig) {
            self.init(cooldownS: c.cooldownS, cooldownMaxS: c.cooldownMaxS, failuresBeforeCooldown: c.failuresBeforeCooldown)
        }

        var enabled: Bool { cooldownS > 0 }
    }

    enum Report {
        case cooldown(provider: String, ms: Int, reason: String)
        case failure(provider: String)
        case success(provider: String)
    }

    private let condition = NSCondition()
    /// Monotonic deadline (ns) per provider.
    private var until: [String: UInt64] = [:]
    private var reports: [Report] = []
    /// Providers this worker reported a failure for since their last success.
    private var failing: Set<String> = []
    private var started = false
    private var stopped = false
    /// Set once the first refresh was tried, so a new worker never acts on an empty view.
    private var ready = false
    private var readyWaiters: [CheckedContinuation<Void, Never>] = []

    let url: RedisURL?
    let keys: Keys
    let policies: [String: Policy]
    let refreshInterval: Double
    let logger: Logger

    /// `url` nil keeps the board local to this process (tests, tools without Redis).
    public init(url: RedisURL?, keys: Keys, policies: [String: Policy], refreshInterval: Double = 0.2,
                logger: Logger = Logger(label: "llmq.cooldown")) {
        self.url = url
        self.keys = keys
        self.policies = policies.filter { $0.value.enabled }
        self.refreshInterval = refreshInterval
        self.logger = logger
    }

    public func failuresKey(_ provider: String) -> String { "\(keys.prefix):failures:\(provider)" }

    /// Seconds the provider is still cooling down, or nil when it may be called.
    /// The first lookup of a worker waits for the board's first read of Redis.
    public func remaining(_ provider: String) async -> Double? {
        guard policies[provider] != nil else { return nil }
        startIfNeeded()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            condition.lock()
            if ready {
                condition.unlock()
                c.resume()
            } else {
                readyWaiters.append(c)
                condition.unlock()
            }
        }
        let end = condition.withLock { until[provider] }
        let now = Clock.nowNanos()
        guard let end, end > now else { return nil }
        return Double(end - now) / 1e9
    }

    /// Records how a call to the provider ended: nil for success, else its error.
    /// A 429 starts a cooldown; upstream failures (5xx, connect errors, the provider's
    /// timeouts) count towards one; other errors (bad requests, auth, unknown models,
    /// cancellations, a job's own timeout_s) say nothing about the provider's health.
    public func record(_ provider: String, error: LLMQError?) {
        guard let policy = policies[provider] else { return }
        guard let error else {
            condition.lock()
            if failing.remove(provider) != nil { enqueue(.success(provider: provider)) }
            condition.unlock()
            return
        }
        switch error.code {
        case .rateLimited:
            let seconds = error.retryable ? (error.retryAfter.map { max($0, 0.1) } ?? policy.cooldownS) : policy.cooldownMaxS
            let reason = error.retryable ? "rate limited" : "quota spent"
            start(provider, seconds: min(seconds, policy.cooldownMaxS), reason: reason)
        case .upstreamUnavailable, .upstreamError, .timeout:
            // A job's own timeout_s running out (not retryable) says nothing about the provider.
            guard policy.failuresBeforeCooldown > 0, error.code != .timeout || error.retryable else { return }
            condition.lock()
            failing.insert(provider)
            enqueue(.failure(provider: provider))
            condition.unlock()
        default:
            return
        }
    }

    /// Starts (or extends) a cooldown here at once and farm-wide through Redis.
    func start(_ provider: String, seconds: Double, reason: String) {
        // Hints are clamped where they are read; this keeps a NaN or an infinity from trapping here anyway.
        let ms = max(1, Int((UpstreamError.clampHint(seconds) ?? 0) * 1000))
        condition.lock()
        let now = Clock.nowNanos()
        let end = now + UInt64(ms) * 1_000_000
        let fresh = (until[provider] ?? 0) <= now
        let extended = end > (until[provider] ?? 0)
        if extended { until[provider] = end }
        enqueue(.cooldown(provider: provider, ms: ms, reason: reason))
        condition.unlock()
        if fresh { FarmMetrics.providerCooldown(provider: provider) }
        if extended {
            FarmMetrics.providerCoolingDown(provider: provider, active: true)
            logger.notice("provider cooling down", metadata: ["provider": "\(provider)", "seconds": "\(Double(ms) / 1000)", "reason": "\(reason)"])
        }
    }

    /// Stops the refresh thread (tests; a worker process simply exits).
    public func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func enqueue(_ r: Report) {  // condition held
        reports.append(r)
        condition.signal()
    }

    private func startIfNeeded() {
        condition.lock()
        defer { condition.unlock() }
        guard !started else { return }
        started = true
        guard url != nil, !policies.isEmpty else {
            ready = true
            return
        }
        let t = Thread { [self] in self.loop() }
        t.name = "llmq-cooldown"
        t.start()
    }

    // MARK: board thread

    static let extendScript = """
        local t = redis.call('PTTL', KEYS[1])
        if t < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) return 1 end
        return 0
        """
    static let countScript = """
        local n = redis.call('INCR', KEYS[1])
        if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
        return n
        """

    private func loop() {
        guard let url else { return }
        var connection: RedisConnection?
        var warned = false
        let providers = policies.keys.sorted()
        var nextRefresh = Clock.nowNanos()
        while true {
            condition.lock()
            while reports.isEmpty && !stopped && Clock.nowNanos() < nextRefresh {
                _ = condition.wait(until: Date().addingTimeInterval(Double(nextRefresh &- Clock.nowNanos()) / 1e9))
            }
            if stopped {
                let waiters = readyWaiters
                readyWaiters.removeAll()
                ready = true
                condition.unlock()
                for w in waiters { w.resume() }
                return
            }
            let batch = reports
            reports.removeAll()
            condition.unlock()

            do throws(LLMQError) {
                if connection == nil {
                    let c = try RedisConnection(url, connectTimeout: 1)
                    c.setTimeout(2)
                    connection = c
                    if warned { logger.notice("cooldown board reconnected to Redis") }
                    warned = false
                }
                for r in batch { try send(r, on: connection!) }
                if Clock.nowNanos() >= nextRefresh {
                    try refresh(providers, on: connection!)
                    nextRefresh = Clock.nowNanos() + UInt64(refreshInterval * 1e9)
                }
            } catch {
                connection = nil
                if !warned { logger.warning("cooldown board cannot reach Redis; using what this worker knows", metadata: ["error": "\(error.message)"]) }
                warned = true
                nextRefresh = Clock.nowNanos() + 1_000_000_000
            }
            markReady()
        }
    }

    private func markReady() {
        condition.lock()
        guard !ready else {
            condition.unlock()
            return
        }
        ready = true
        let waiters = readyWaiters
        readyWaiters.removeAll()
        condition.unlock()
        for w in waiters { w.resume() }
    }

    private func send(_ r: Report, on c: RedisConnection) throws(LLMQError) {
        switch r {
        case .cooldown(let provider, let ms, let reason):
            try c.command(["EVAL", Self.extendScript, "1", keys.cooldown(provider), String(ms), reason])
        case .success(let provider):
            try c.command(["DEL", failuresKey(provider)])
        case .failure(let provider):
            guard let policy = policies[provider] else { return }
            let window = Int(max(10, policy.cooldownMaxS) * 1000)
            let n = try c.command(["EVAL", Self.countScript, "1", failuresKey(provider), String(window)]).integer ?? 0
            if n >= policy.failuresBeforeCooldown {
                try c.command(["DEL", failuresKey(provider)])
                start(provider, seconds: policy.cooldownS, reason: "\(n) failures in a row")
            }
        }
    }

    private func refresh(_ providers: [String], on c: RedisConnection) throws(LLMQError) {
        for p in providers { try c.append(["PTTL", keys.cooldown(p)]) }
        var remaining: [String: Int] = [:]
        for p in providers {
            if let ms = try c.reply().integer, ms > 0 { remaining[p] = ms }
        }
        let now = Clock.nowNanos()
        condition.lock()
        for p in providers {
            // The later of what Redis says and what this worker set itself (a report may still be on its way).
            let shared = remaining[p].map { now + UInt64($0) * 1_000_000 }
            let mine = until[p].flatMap { $0 > now ? $0 : nil }
            until[p] = [shared, mine].compactMap { $0 }.max()
        }
        let active = providers.map { (provider: $0, active: until[$0] != nil) }
        condition.unlock()
        for a in active { FarmMetrics.providerCoolingDown(provider: a.provider, active: a.active) }
    }
}
