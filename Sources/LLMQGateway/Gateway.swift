import Foundation
import LLMQ
import Logging
import Synchronization

/// The gateway's side of the wire protocol: it checks callers and capacity, pushes jobs,
/// follows their channels through one shared subscription, and cancels them. It never runs a job.
///
/// Thread rules: any thread; Redis work goes through `pool` (short commands) and `hub`
/// (subscriptions), the counters below are under their mutexes.
public final class Gateway: Sendable {
    /// Who is calling: the tenant of their API key and its concurrency limit.
    public struct Caller: Sendable {
        public var tenant: String?
        public var limit: Int?
    }

    /// A request admitted past the limits; `release` it when the request ends.
    public struct Lease: Sendable {
        public var id: String
        public var mode: Mode
        public var tenant: String?
    }

    public let config: FarmConfig
    public let keys: Keys
    public let hub: SubscriptionHub
    public let metrics: GatewayMetrics
    public let readiness: Readiness
    let apiKeys: APIKeys
    let pool: RedisPool
    let parser: JobParser
    let logger: Logger
    /// Jobs per mode waiting or running at the last sample, plus those admitted here since.
    private let waiting = Mutex<[Mode: Int]>([:])
    /// Requests holding a tenant lease, refreshed so a lost gateway's leases expire.
    private let leases = Mutex<[String: String]>([:])
    /// Providers cooling down at the last sample, with the end of their cooldown (nil: no expiry).
    private let cooldowns = Mutex<[String: ContinuousClock.Instant?]>([:])
    private let stopping = Atomic<Bool>(false)

    static let leaseSeconds = 30.0

    public init(config: FarmConfig, apiKeys: APIKeys, logger: Logger) throws(LLMQError) {
        self.config = config
        self.apiKeys = apiKeys
        self.logger = logger
        let url = try RedisURL(config.redis)
        // The hub subscribes with classic SUBSCRIBE on one connection: it would hear nothing of a sharded farm.
        if config.keys.pubsub == .sharded {
            throw .configuration(
                "the gateway reads request channels with classic SUBSCRIBE, but pubsub resolves to sharded for \(url); "
                    + "set `pubsub: classic` in the gateway's and the farm's configuration")
        }
        keys = Keys(prefix: config.prefix)
        hub = SubscriptionHub(url: url, logger: logger)
        pool = RedisPool(url: url)
        parser = JobParser(maxBytes: config.maxJobBytes)
        metrics = GatewayMetrics()
        readiness = Readiness()
    }

    public func start() {
        hub.start()
        pool.start()
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        hub.stop()
        pool.stop()
    }

    // MARK: callers and models

    public func authenticate(_ authorization: String?) throws(GatewayError) -> Caller {
        if apiKeys.isOpen { return Caller(tenant: nil, limit: config.gateway.tenantConcurrency > 0 ? config.gateway.tenantConcurrency : nil) }
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else {
            metrics.rejected("auth")
            throw .unauthorized("missing API key: send Authorization: Bearer KEY")
        }
        let key = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard let entry = apiKeys.lookup(key: key) else {
            metrics.rejected("auth")
            throw .unauthorized("incorrect API key; ask the operator of this gateway for one")
        }
        let limit = entry.maxConcurrent ?? config.gateway.tenantConcurrency
        return Caller(tenant: entry.tenant, limit: limit > 0 ? limit : nil)
    }

    /// The targets of a model, as a job names it: a route, or PROVIDER/MODEL of a configured provider.
    public func targets(of model: String) throws(GatewayError) -> [String] {
        if let t = config.routes[model] { return t }
        if let slash = model.firstIndex(of: "/"), config.providers[String(model[..<slash])] != nil { return [model] }
        throw .notFound("the model \"\(model)\" is neither a route nor PROVIDER/MODEL of a configured provider; GET /v1/models lists them",
                        code: "model_not_found")
    }

    /// Checks a job as a worker would, so a bad one is answered 400 before it is queued.
    public func validate(_ raw: [UInt8], mode: Mode) throws(GatewayError) {
        guard config.modes[mode] != nil else { throw .notFound("this farm serves no \(mode) mode", code: "mode_not_served") }
        do {
            _ = try parser.parse(raw, mode: mode)
        } catch {
            throw .badRequest(error.error.message, code: "invalid_job")
        }
    }

    // MARK: admission

    private enum Decision: Sendable {
        case admitted
        case tenantFull(Int)
        case modeFull(Int)
    }

    /// Admits a request and pushes its job (`raw`, when given) in one trip to a Redis thread:
    /// some target of the route not cooling down (as last sampled), its tenant under its
    /// concurrency limit (counted in Redis across gateways), then the waiting work of its mode
    /// under the limit. The tenant comes first, so a tenant over its own limit hears 429 whatever the load.
    public func admit(id: String, mode: Mode, targets: [String], caller: Caller, push raw: [UInt8]? = nil) async throws(GatewayError) -> Lease {
        if let lease = try admitLocally(id: id, mode: mode, targets: targets, caller: caller) {
            if let raw { try await push(raw, mode: mode) }
            return lease
        }
        let tenantKey = tenantActiveKey(caller.tenant ?? "default")
        let limit = caller.limit ?? 0
        let queue = config.family(forJob: id, mode: mode).queue
        let now = Date().timeIntervalSince1970
        let decision: Decision = try await redis { [self] c throws(LLMQError) in
            try c.append(["ZREMRANGEBYSCORE", tenantKey, "-inf", String(Int(now * 1000))])
            try c.append(["ZADD", tenantKey, String(Int((now + Self.leaseSeconds) * 1000)), id])
            try c.append(["ZCARD", tenantKey])
            _ = try c.reply()
            _ = try c.reply()
            let active = try c.reply().integer ?? 0
            var decision = Decision.admitted
            if active > limit {
                decision = .tenantFull(limit)
            } else if let n = takeWaitingSlot(mode) {
                decision = .modeFull(n)
            }
            if case .admitted = decision {
                if let raw {
                    let r = try c.command([Array("LPUSH".utf8), Array(queue.utf8), raw])
                    if case .error(let e) = r { throw .redis("LPUSH \(queue) failed: \(e)") }
                }
            } else {
                try c.command(["ZREM", tenantKey, id])
            }
            return decision
        }
        switch decision {
        case .admitted:
            leases.withLock { $0[id] = tenantKey }
            return Lease(id: id, mode: mode, tenant: caller.tenant)
        case .tenantFull(let n):
            metrics.rejected("tenant")
            throw GatewayError(.tooManyRequests, type: "rate_limit_error", code: "rate_limited",
                               "tenant \(caller.tenant ?? "default") already runs \(n) requests at once (its limit); retry when one finishes",
                               retryAfter: 1)
        case .modeFull(let n):
            throw modeFull(mode, n)
        }
    }

    /// The admission of a caller without a tenant limit, which needs no Redis: sampled cooldowns,
    /// then the waiting work of its mode. Nil when the caller's tenant limit must be counted in
    /// Redis first (`admit` does it).
    public func admitLocally(id: String, mode: Mode, targets: [String], caller: Caller) throws(GatewayError) -> Lease? {
        if let wait = coolingDown(targets) {
            metrics.rejected("cooldown")
            throw .unavailable("every target of \(targets.joined(separator: ", ")) is cooling down after upstream failures; retry after \(wait) s",
                               retryAfter: wait, code: "upstream_unavailable")
        }
        guard caller.limit == nil else { return nil }
        if let n = takeWaitingSlot(mode) { throw modeFull(mode, n) }
        return Lease(id: id, mode: mode, tenant: caller.tenant)
    }

    /// Counts one more job waiting in `mode` unless the mode is at its limit; returns the limit when it is.
    private func takeWaitingSlot(_ mode: Mode) -> Int? {
        guard let limit = config.gateway.waitingLimit(mode) else { return nil }
        let over: Bool = waiting.withLock { w in
            if w[mode, default: 0] >= limit { return true }
            w[mode, default: 0] += 1  // counted here until the next sample sees the job in Redis
            return false
        }
        return over ? limit : nil
    }

    private func modeFull(_ mode: Mode, _ n: Int) -> GatewayError {
        metrics.rejected("admission")
        return .unavailable("the \(mode) queue holds \(n) or more jobs waiting or running (gateway.max_waiting); retry later",
                            retryAfter: config.gateway.retryAfterS)
    }

    /// Seconds to wait when every provider of `targets` cooled down at the last sample; nil when one is usable.
    private func coolingDown(_ targets: [String]) -> Int? {
        let now = ContinuousClock.now
        return cooldowns.withLock { cd -> Int? in
            guard !cd.isEmpty else { return nil }
            var soonest: Duration?
            var any = false
            for t in targets {
                guard let slash = t.firstIndex(of: "/") else { continue }
                any = true
                guard let entry = cd[String(t[..<slash])] else { return nil }
                if let until = entry {
                    guard until > now else { return nil }
                    soonest = min(soonest ?? (until - now), until - now)
                }
            }
            guard any else { return nil }
            let ms = soonest.map { Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15 } ?? 1000
            return max(1, Int((ms / 1000).rounded(.up)))
        }
    }

    /// Ends a request's tenant lease.
    public func release(_ lease: Lease) async {
        guard let key = leases.withLock({ $0.removeValue(forKey: lease.id) }) else { return }
        await releaseTenant(id: lease.id, key: key)
    }

    private func releaseTenant(id: String, key: String) async {
        _ = try? await redis { c throws(LLMQError) in try c.command(["ZREM", key, id]) }
    }

    func tenantActiveKey(_ tenant: String) -> String { "\(keys.prefix):gateway:tenant:\(tenant):active" }

    // MARK: jobs

    /// LPUSHes a job (subscribe to its channel first when every line must be seen).
    public func push(_ raw: [UInt8], mode: Mode) async throws(GatewayError) {
        let queue = config.family(forJob: JobParser.peekID(raw) ?? "", mode: mode).queue
        try await redis { c throws(LLMQError) in
            let r = try c.command([Array("LPUSH".utf8), Array(queue.utf8), raw])
            if case .error(let e) = r { throw .redis("LPUSH \(queue) failed: \(e)") }
        }
    }

    /// Asks the farm to cancel a request, queued or running (SET the flag, PUBLISH the id).
    public func cancel(id: String) async throws(GatewayError) {
        let flag = keys.cancel(id)
        let channel = keys.cancelChannel
        try await redis { c throws(LLMQError) in
            try c.append(["SET", flag, "1", "EX", "3600"])
            try c.append(["PUBLISH", channel, id])
            _ = try c.reply()
            _ = try c.reply()
        }
        metrics.cancelled()
    }

    /// Runs Redis commands on a pool thread; Redis trouble becomes a 503.
    func redis<T: Sendable>(_ body: @escaping @Sendable (RedisConnection) throws(LLMQError) -> T) async throws(GatewayError) -> T {
        do {
            return try await pool.run(body)
        } catch {
            throw .unavailable("Redis did not answer: \(error.message)", retryAfter: config.gateway.retryAfterS, code: "redis_unavailable")
        }
    }

    // MARK: background work

    /// Samples waiting work per mode and the providers' cooldowns, and refreshes tenant leases,
    /// until the gateway stops. Admission reads the cooldowns sampled here rather than ask Redis per request.
    public func runSampler() async {
        let modes = config.modes.keys.sorted()
        let providers = config.providers.keys.sorted()
        let shards = config.shards
        let fairModes = Set(config.modes.filter { $0.value.schedule == .fair }.keys)
        let keys = self.keys
        var lastRefresh = Date.distantPast
        while !stopping.load(ordering: .relaxed) && !Task.isCancelled {
            do throws(LLMQError) {
                let (counts, ttls) = try await pool.run { c throws(LLMQError) in
                    (try Gateway.sample(c, keys: keys, modes: modes, shards: shards, fairModes: fairModes), try Gateway.cooldownTTLs(c, keys: keys, providers: providers))
                }
                let now = ContinuousClock.now
                var cooling: [String: ContinuousClock.Instant?] = [:]
                for (p, ms) in ttls where ms > 0 || ms == -1 { cooling.updateValue(ms > 0 ? now + .milliseconds(ms) : nil, forKey: p) }
                waiting.withLock { $0 = counts }
                cooldowns.withLock { $0 = cooling }
                readiness.probed(redisReachable: true)
                for (m, n) in counts { metrics.waiting(mode: m, n) }
            } catch {
                readiness.probed(redisReachable: false)
            }
            metrics.subscriptions(hub.channelCount)
            if Date().timeIntervalSince(lastRefresh) > Self.leaseSeconds / 3 {
                lastRefresh = Date()
                let held = leases.withLock { $0 }
                if !held.isEmpty {
                    let expiry = String(Int((Date().timeIntervalSince1970 + Self.leaseSeconds) * 1000))
                    _ = try? await pool.run { c throws(LLMQError) in
                        for (id, key) in held { try c.append(["ZADD", key, "XX", expiry, id]) }
                        for _ in held { _ = try c.reply() }
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(Int(config.gateway.sampleIntervalS * 1000)))
        }
    }

    /// Pending + in-flight + delayed jobs of each mode. In-flight lists are found through the
    /// worker registry, not SCAN, whose cost grows with every key in the database.
    static func sample(_ c: RedisConnection, keys: Keys, modes: [Mode], shards: [Mode: Int] = [:], fairModes: Set<Mode> = []) throws(LLMQError)
        -> [Mode: Int]
    {
        let workers = (try c.command(["ZRANGE", keys.workers, "0", "-1"]).array ?? []).compactMap(\.string)
        for m in modes {
            for f in QueueFamily.all(m, shards: shards[m] ?? 1, keys: keys) {
                try c.append(["LLEN", f.queue])
                try c.append(["ZCARD", f.delayed])
                for w in workers { try c.append(["LLEN", f.inflight(worker: w)]) }
                // A fair mode's jobs already sorted into tenant lists wait too.
                if fairModes.contains(m) {
                    try c.append([Array("EVAL".utf8), Array(Scripts.fairCounts.utf8), Array("1".utf8), Array(f.running.utf8), Array(f.base.utf8)])
                }
            }
        }
        var out: [Mode: Int] = [:]
        for m in modes {
            var n = 0
            for _ in 0..<((2 + workers.count + (fairModes.contains(m) ? 1 : 0)) * (shards[m] ?? 1)) {
                let r = try c.reply()
                if case .error(let e) = r { throw .redis(e) }
                if let a = r.array {
                    for k in stride(from: 1, to: a.count, by: 3) { n += a[k].integer ?? 0 }
                } else {
                    n += r.integer ?? 0
                }
            }
            out[m] = n
        }
        return out
    }

    /// The PTTL of each provider's cooldown key: -2 when it is not cooling down, -1 when its cooldown has no expiry.
    static func cooldownTTLs(_ c: RedisConnection, keys: Keys, providers: [String]) throws(LLMQError) -> [String: Int] {
        for p in providers { try c.append(["PTTL", keys.cooldown(p)]) }
        var out: [String: Int] = [:]
        for p in providers { out[p] = try c.reply().integer ?? -2 }
        return out
    }

    /// A new request id, `PREFIX-` and 24 random hex digits.
    public static func newID(_ prefix: String) -> String {
        var g = SystemRandomNumberGenerator()
        let a = g.next() as UInt64, b = g.next() as UInt32
        return prefix + "-" + String(a, radix: 16).leftPad(16) + String(b, radix: 16).leftPad(8)
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
