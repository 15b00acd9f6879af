import Foundation
import Logging
import Synchronization

/// Keeps this worker's `PREFIX:worker:ID` hash alive (pid, host, modes, load,
/// state) with a short expiry and its score in `PREFIX:workers` fresh, and
/// reaps workers whose heartbeat expired: their in-flight jobs go back to the
/// queues (see `Reaper`). Runs on a thread and connection of its own.
public final class Heartbeat: Sendable {
    public struct Settings: Sendable {
        public var interval: Double = 1
        /// A worker whose hash is older than this is lost.
        public var ttl: Double = 5
    }

    let id: String
    let keys: Keys
    let url: RedisURL
    let modes: [Mode]
    let settings: Settings
    let reaper: Reaper
    let load: @Sendable () -> [Mode: Int]
    /// Called once when an operator asks this worker to drain (`llmq drain`).
    let onDrainRequest: @Sendable () -> Void
    /// The lease each heartbeat renews, and what to do before recovering after it lapsed.
    let lease: Lease?
    let onLapse: @Sendable () -> Void
    let logger: Logger
    private let state = Mutex<String>("running")
    private let stopping = Atomic<Bool>(false)

    public init(id: String, keys: Keys, url: RedisURL, modes: [Mode], settings: Settings, reaper: Reaper, logger: Logger,
                load: @escaping @Sendable () -> [Mode: Int], onDrainRequest: @escaping @Sendable () -> Void = {},
                lease: Lease? = nil, onLapse: @escaping @Sendable () -> Void = {}) {
        self.onDrainRequest = onDrainRequest
        self.lease = lease
        self.onLapse = onLapse
        self.id = id
        self.keys = keys
        self.url = url
        self.modes = modes
        self.settings = settings
        self.reaper = reaper
        self.logger = logger
        self.load = load
    }

    public func setState(_ s: String) { state.withLock { $0 = s } }

    /// Beats until the task is cancelled, then deregisters the worker.
    public func run() async {
        await runOnThread(named: "llmq-heartbeat", untilShutdown: false, loop: { self.loop() },
                          stop: { self.stopping.store(true, ordering: .sequentiallyConsistent) })
    }

    private func loop() {
        var connection: RedisConnection?
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let hostname = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let started = String(Int(Clock.unixTime()))
        var lastReap = 0.0
        // After an outage every worker's heartbeat is stale; reap only once the others had time to come back.
        var healthySince: Double?
        var drainRequested = false
        while !stopping.load(ordering: .sequentiallyConsistent) {
            do throws(LLMQError) {
                if connection == nil {
                    connection = try RedisConnection(url)
                    // A hung connection must not hold the renewal past the lease (the watchdog fences meanwhile).
                    connection!.setTimeout(max(0.5, settings.ttl / 3))
                }
                let c = connection!
                let sentAt = Clock.nowNanos()
                let now = Clock.unixTime()
                let l = load()
                var fields = ["HSET", keys.worker(id), "pid", String(getpid()), "host", hostname, "started", started,
                              "heartbeat", String(format: "%.3f", now), "state", state.withLock { $0 },
                              "modes", modes.map(\.rawValue).joined(separator: ",")]
                for (m, n) in l.sorted(by: { $0.key < $1.key }) { fields += ["inflight_\(m)", String(n)] }
                try c.append(fields)
                try c.append(["PEXPIRE", keys.worker(id), String(Int(settings.ttl * 1000))])
                try c.append(["ZADD", keys.workers, String(format: "%.3f", now), id])
                try c.append(["GET", keys.control(id)])
                for _ in 0..<3 {
                    if case .error(let e) = try c.reply() { throw LLMQError.redis("heartbeat refused: \(e)") }
                }
                let control = try c.reply()
                if let lease, lease.renewed(sentAt: sentAt) {
                    // The lease lapsed: what this worker held is fenced off; put it back before taking more.
                    logger.warning("lease renewed after a lapse; recovering the jobs this worker held before it")
                    onLapse()
                    let n = try reaper.recover(worker: id, modes: modes, connection: c)
                    lease.recovered()
                    logger.notice("recovered after a lapsed lease", metadata: ["jobs": "\(n)"])
                }
                if control.string == "drain" && !drainRequested {
                    drainRequested = true
                    logger.notice("an operator asked this worker to drain")
                    onDrainRequest()
                }
                if healthySince == nil { healthySince = now }
                if now - lastReap >= settings.interval * 2 && now - healthySince! > settings.ttl * 2 {
                    lastReap = now
                    try reapLost(c, now: now)
                }
            } catch {
                logger.warning("heartbeat: Redis unavailable, retrying", metadata: ["error": "\(error.message)"])
                FarmMetrics.redisReconnect(component: "heartbeat")
                connection = nil
                healthySince = nil
            }
            var slept = 0.0
            while slept < settings.interval && !stopping.load(ordering: .sequentiallyConsistent) {
                usleep(50_000)
                slept += 0.05
            }
        }
        if let c = connection ?? (try? RedisConnection(url)) {
            _ = try? c.command(["DEL", keys.worker(id)])
            _ = try? c.command(["ZREM", keys.workers, id])
        }
    }

    /// Workers whose score is stale and whose hash expired are lost; their jobs are recovered.
    private func reapLost(_ c: RedisConnection, now: Double) throws(LLMQError) {
        let stale = try c.command(["ZRANGEBYSCORE", keys.workers, "-inf", String(format: "%.3f", now - settings.ttl)])
        for w in stale.array ?? [] {
            guard let worker = w.string, worker != id else { continue }
            guard case .integer(0) = try c.command(["EXISTS", keys.worker(worker)]) else { continue }
            let n = try reaper.recover(worker: worker, modes: modes, connection: c)
            try c.command(["ZREM", keys.workers, worker])
            logger.warning("reaped a lost worker", metadata: ["lost_worker": "\(worker)", "jobs": "\(n)"])
        }
    }
}
