import Foundation
import Logging

/// The farm's embedding cache: vectors of embed jobs kept in Redis, shared by every worker.
///
/// An entry is `PREFIX:embed_cache:HEX`, a string holding one vector's JSON text as the
/// provider sent it, written with `SET … EX ttl_s`. HEX is the SHA-256 of the provider (name
/// and API root), the model, the job's `params.extra` (dimensions, encoding format, input
/// type: whatever changes the vector) and the input text. Every command names one key, so the
/// entries of one batch may live in different cluster slots; they are pipelined, never scripted.
///
/// `max_bytes` is a farm-wide budget per cache (route or provider): the bytes of vectors
/// written within the last `ttl_s`, which bounds the bytes still alive. Workers count what
/// they write in `PREFIX:embed_cache:bytes:{SCOPE}:N`, one counter per eighth of `ttl_s`,
/// each expiring once every entry it counted has; a lookup reads the live counters with the
/// entries, and a store writes only what still fits. Workers storing at the same moment
/// may each spend the last of the budget, so it can be passed by at most one batch per worker.
///
/// Thread rules: `lookup` and `store` from any task; Redis only on the cache's own thread,
/// which owns its connection; the queue is guarded by `condition`. A cache that cannot reach
/// Redis answers with misses and stores nothing, so its jobs go upstream as if it were off.
public final class EmbeddingCache: @unchecked Sendable {  // mutable state is guarded by `condition`
    /// The cache a job's call uses: a route's `embed_cache`, else its target provider's.
    public struct Scope: Sendable, Equatable {
        /// `route.NAME` or `provider.NAME`; names the byte budget.
        public let name: String
        public let config: EmbedCacheConfig
    }

    /// Each live counter covers this share of `ttl_s`.
    static let bucketsPerTTL = 8

    let url: RedisURL?
    let prefix: String
    let routes: [String: EmbedCacheConfig]
    let providers: [String: EmbedCacheConfig]
    let logger: Logger
    private let condition = NSCondition()
    private var queue: [@Sendable (RedisConnection?) -> Bool] = []
    private var started = false
    private var budgetWarned: Set<String> = []

    /// `url` nil keeps every lookup a miss (tools without Redis).
    public init(url: RedisURL?, prefix: String, routes: [String: EmbedCacheConfig], providers: [String: EmbedCacheConfig],
                logger: Logger = Logger(label: "llmq.embed-cache")) {
        self.url = url
        self.prefix = prefix
        self.routes = routes
        self.providers = providers
        self.logger = logger
    }

    /// The cache for a call of `route` (a job's `model`) to `provider`, or nil when none is configured.
    public func scope(route: String, provider: String) -> Scope? {
        if let c = routes[route] { return Scope(name: "route.\(route)", config: c) }
        if let c = providers[provider] { return Scope(name: "provider.\(provider)", config: c) }
        return nil
    }

    /// The entry key of one input.
    public func key(provider: ProviderEndpoint, model: String, extra: [String: JSONValue], input: String) -> String {
        var h = SHA256()
        for part in [Array("llmq-embed-1".utf8), Array(provider.name.utf8), Array(provider.baseURL.utf8), Array(model.utf8),
                     JSONValue.object(extra).jsonBytes, Array(input.utf8)] {
            // Length-prefixed, so two different tuples never hash the same bytes.
            h.update(Array("\(part.count):".utf8))
            h.update(part)
        }
        return "\(prefix):embed_cache:\(SHA256.hex(h.finalize()))"
    }

    /// What Redis holds for `keys`, in order, and the budget spent; nil when Redis cannot be reached.
    func lookup(_ keys: [String], scope: Scope) async -> (vectors: [[UInt8]?], spent: Int)? {
        let counters = liveCounters(scope, now: Int(Clock.unixTime()))
        return await perform { c throws(LLMQError) in
            for k in keys { try c.append(["GET", k]) }
            for k in counters { try c.append(["GET", k]) }
            var vectors: [[UInt8]?] = []
            for _ in keys {
                let r = try c.reply()
                vectors.append(r.bytes.flatMap { $0.isEmpty ? nil : $0 })
            }
            var spent = 0
            for _ in counters { spent += max(0, try c.reply().integer ?? 0) }
            return (vectors, spent)
        }
    }

    /// Stores as many `entries` (key, vector) as the budget leaves room for; returns the bytes stored.
    @discardableResult
    func store(_ entries: [(key: String, vector: [UInt8])], scope: Scope, spent: Int) async -> Int {
        var room = scope.config.maxBytes - spent
        let fitting = entries.filter { e in
            guard e.vector.count <= room else { return false }
            room -= e.vector.count
            return true
        }
        if fitting.count < entries.count { warnBudget(scope) }
        guard !fitting.isEmpty else { return 0 }
        let now = Int(Clock.unixTime())
        let width = Self.bucketWidth(scope.config.ttlS)
        let counter = counterKey(scope, bucket: now / width)
        let ttl = String(scope.config.ttlS)
        let bytes = fitting.reduce(0) { $0 + $1.vector.count }
        let stored = await perform { c throws(LLMQError) in
            for e in fitting { try c.append([Array("SET".utf8), Array(e.key.utf8), e.vector, Array("EX".utf8), Array(ttl.utf8)]) }
            try c.append(["INCRBY", counter, String(bytes)])
            // The counter outlives every entry it counts by at most one bucket.
            try c.append(["EXPIRE", counter, String(scope.config.ttlS + width + 1)])
            var ok = 0
            for e in fitting {
                if case .error = try c.reply() { continue }
                ok += e.vector.count
            }
            _ = try c.reply()
            _ = try c.reply()
            return ok
        }
        return stored ?? 0
    }

    static func bucketWidth(_ ttl: Int) -> Int { max(1, ttl / bucketsPerTTL) }

    func counterKey(_ scope: Scope, bucket: Int) -> String { "\(prefix):embed_cache:bytes:{\(scope.name)}:\(bucket)" }

    /// The counters that may still count live entries: those of the buckets written within the last `ttl_s`.
    func liveCounters(_ scope: Scope, now: Int) -> [String] {
        let width = Self.bucketWidth(scope.config.ttlS)
        let oldest = max(0, now - scope.config.ttlS) / width
        return (oldest...(now / width)).map { counterKey(scope, bucket: $0) }
    }

    private func warnBudget(_ scope: Scope) {
        let first = condition.withLock { budgetWarned.insert(scope.name).inserted }
        if first {
            logger.notice("embedding cache budget spent: new vectors are not stored until older ones expire; raise max_bytes or lower ttl_s", metadata: [
                "cache": "\(scope.name)", "max_bytes": "\(scope.config.maxBytes)",
            ])
        }
    }

    // MARK: the cache's thread

    /// Runs `work` on the cache's thread with its connection; nil when Redis failed.
    private func perform<T: Sendable>(_ work: @escaping @Sendable (RedisConnection) throws(LLMQError) -> T) async -> T? {
        guard url != nil else { return nil }
        return await withCheckedContinuation { (k: CheckedContinuation<T?, Never>) in
            let item: @Sendable (RedisConnection?) -> Bool = { [logger] c in
                guard let c else {
                    k.resume(returning: nil)
                    return true
                }
                do throws(LLMQError) {
                    k.resume(returning: try work(c))
                    return true
                } catch {
                    logger.warning("embedding cache lost Redis; its jobs go upstream until it is back", metadata: ["error": "\(error.message)"])
                    k.resume(returning: nil)
                    return false
                }
            }
            condition.lock()
            queue.append(item)
            if !started {
                started = true
                let t = Thread { [self] in loop() }
                t.name = "llmq-embed-cache"
                t.start()
            }
            condition.signal()
            condition.unlock()
        }
    }

    private func loop() {
        guard let url else { return }
        var connection: RedisConnection?
        var retryAt: UInt64 = 0
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let batch = queue
            queue.removeAll()
            condition.unlock()
            for item in batch {
                // A Redis that is down costs each lookup one refused connect a second at most, not a timeout each.
                if connection == nil && Clock.nowNanos() >= retryAt {
                    do throws(LLMQError) {
                        let c = try RedisConnection(url, connectTimeout: 1)
                        c.setTimeout(2)
                        connection = c
                    } catch {
                        retryAt = Clock.nowNanos() + 1_000_000_000
                    }
                }
                if !item(connection) { connection = nil }
            }
        }
    }
}
