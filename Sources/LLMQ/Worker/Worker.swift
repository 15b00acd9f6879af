import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// One worker process: a fetcher per mode, the HTTP engine, the publisher,
/// and a task per job. On graceful shutdown it drains: it stops taking jobs,
/// lets running ones finish for `drain_timeout_s`, then puts the rest back.
public final class Worker: Service {
    public let id: String
    let config: FarmConfig
    let url: RedisURL
    let keys: Keys
    let logger: Logger
    let registry: ProviderRegistry

    public init(id: String, config: FarmConfig, logger: Logger) throws(LLMQError) {
        self.id = id
        self.config = config
        self.url = try RedisURL(config.redis)
        self.keys = config.keys
        var l = logger
        l[metadataKey: "worker"] = "\(id)"
        self.logger = l
        self.registry = try ProviderRegistry(config: config)
    }

    /// A worker id unique on this host: `HOSTNAME-SLOT`, stable across restarts of the same slot
    /// so a restarted worker finds what its predecessor left in flight.
    public static func defaultID(slot: Int? = nil) -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: ".").first.map(String.init) ?? "host"
        return "\(host)-\(slot.map(String.init) ?? String(getpid()))"
    }

    public func run() async throws {
        var heartbeatSettings = Heartbeat.Settings()
        heartbeatSettings.ttl = config.leaseTTLS
        heartbeatSettings.interval = min(heartbeatSettings.interval, config.leaseTTLS / 4)
        let lease = Lease(ttl: heartbeatSettings.ttl)
        let publisher = EventPublisher(url: url, lease: lease, logger: logger)
        try publisher.start()
        // Every permit's transfer can hold a connection; a few more for the provider calls of operations.
        let engine = HTTPEngine(sink: publisher, connections: config.modes.values.reduce(16) { $0 + $1.concurrency },
                                threads: config.httpThreads)
        engine.start()
        try recoverOrphans()
        let modes = config.modes.keys.sorted()
        let promoter = DelayedJobPromoter(families: config.allFamilies, url: url, batch: config.delayedBatch, logger: logger)
        FarmMetrics.primeLifecycle(modes: modes)
        FarmMetrics.primeEmbedCache(providers: config.providers.keys.sorted())
        let runner = JobRunner(
            settings: .init(
                worker: id, keys: keys, resultTTL: config.resultTTLS, logTTL: config.logTTLS, maxJobBytes: config.maxJobBytes,
                maxAttempts: config.maxAttempts, maxOutputBytes: config.maxOutputBytes, retryBase: config.retryBaseS, retryCap: config.retryMaxS,
                replicaAcknowledged: config.durability == "replica"),
            registry: registry, engine: engine, publisher: publisher, lease: lease, promoter: promoter, labels: ModelLabels(config: config),
            logger: logger, engines: EngineGate.fromEnvironment(config: config))

        let permits = Dictionary(uniqueKeysWithValues: modes.map { ($0, Permits(config.modes[$0]!.concurrency)) })
        let families = config.allFamilies
        let running = Atomic<Int>(families.count)
        let heldJobs = HeldJobs()
        let fair = FairSchedule(config: config)
        // Jobs running per mode, for the gauges and the heartbeat (a fetcher waiting in BLMOVE holds a permit but no job).
        let held = Mutex<[Mode: Int]>([:])
        let holding = { @Sendable (mode: Mode, change: Int) in
            let n = held.withLock { h in
                h[mode, default: 0] += change
                return h[mode]!
            }
            FarmMetrics.permits(mode: mode, inUse: n, capacity: permits[mode]!.capacity)
        }
        let jobTasks = JobTasks()
        let fetchers = families.map { family in
            JobFetcher(
                family: family, fair: config.modes[family.mode]!.schedule == .fair ? fair : nil, worker: id, url: url,
                permits: permits[family.mode]!, held: heldJobs, lease: lease, logger: logger,
                deliver: { job, epoch, cancelKey in
                    let p = permits[job.mode]!
                    holding(job.mode, 1)
                    jobTasks.start {
                        await runner.run(job, epoch: epoch, cancelKey: cancelKey)
                        heldJobs.remove(job.raw, family: job.family)
                        p.release()
                        holding(job.mode, -1)
                    }
                },
                onExit: { if running.subtract(1, ordering: .relaxed).newValue == 0 { jobTasks.close() } })
        }
        let drainTimeout = config.drainTimeoutS
        let drainTimer = Mutex<Task<Void, Never>?>(nil)
        let draining = Atomic<Bool>(false)
        let stateBox = Mutex<Heartbeat?>(nil)
        let startDrain: @Sendable (String) -> Void = { [logger] why in
            guard !draining.exchange(true, ordering: .relaxed) else { return }
            logger.info("draining (\(why)): no new jobs; in-flight jobs get \(drainTimeout) s")
            stateBox.withLock { $0?.setState("draining") }
            fetchers.forEach { $0.stop() }
            drainTimer.withLock {
                $0 = Task {
                    try? await Task.sleep(for: .seconds(drainTimeout))
                    if !Task.isCancelled {
                        logger.warning("drain timeout reached; putting unfinished jobs back on their queues")
                        runner.abortAll()
                        // Jobs that still cannot write their ends meet an unreachable Redis: stop waiting for it.
                        try? await Task.sleep(for: .seconds(Self.redisPatienceS))
                        if !Task.isCancelled { publisher.abandon() }
                    }
                }
            }
        }
        // A lapsed lease: stop every job of the old epoch and drop their unsent writes.
        let fence: @Sendable (UInt64) -> Void = { [logger] epoch in
            FarmMetrics.leaseLapsed()
            logger.error("lease lapsed: no heartbeat renewal in time; stopping the jobs held under it without a write")
            publisher.discardPending()
            runner.fence(olderThan: epoch)
        }
        let heartbeat = Heartbeat(
            id: id, keys: keys, url: url, modes: modes, settings: heartbeatSettings, reaper: reaper(), logger: logger,
            load: { held.withLock { $0 } }, onDrainRequest: { startDrain("asked through Redis") },
            lease: lease, onLapse: { publisher.discardPending(); runner.fence(olderThan: lease.epoch) })
        stateBox.withLock { $0 = heartbeat }
        let watchdog = LeaseWatchdog(lease: lease, onFence: fence)
        let cancels = CancelListener(keys: keys, url: url, logger: logger) { id in runner.cancel(id: id) }
        logger.info("worker started", metadata: [
            "redis": "\(url)", "modes": "\(modes.map { "\($0)=\(config.modes[$0]!.concurrency)" }.joined(separator: ","))",
        ])

        // The worker is a composition: the parts a drain still needs run until the jobs ended;
        // the fetchers stop first (a drain, a signal), and the engine and publisher flush last.
        await withDiscardingTaskGroup { services in
            services.addTask { await heartbeat.run() }
            services.addTask { await cancels.run() }
            services.addTask { await promoter.run() }
            services.addTask { await watchdog.run() }
            for f in fetchers { services.addTask { await f.run() } }
            await withGracefulShutdownHandler {
                await jobTasks.allEnded()
            } onGracefulShutdown: {
                startDrain("signal")
            }
            if draining.load(ordering: .relaxed) && !Task.isShuttingDownGracefully {
                heartbeat.setState("drained")
                logger.notice("drained; idle until stopped")
                try? await gracefulShutdown()
            }
            services.cancelAll()
        }
        drainTimer.withLock { $0?.cancel() }
        await engine.shutdown()
        await publisher.shutdown(within: Self.redisPatienceS)
        logger.info("worker stopped")
    }

    /// How long a stopping worker waits for an unreachable Redis before it exits without its last writes.
    static let redisPatienceS = 10.0

    func reaper() -> Reaper {
        Reaper(keys: keys, url: url, me: id, defaultMaxAttempts: config.maxAttempts,
               resultTTL: config.resultTTLS, logTTL: config.logTTLS, maxJobBytes: config.maxJobBytes, shards: config.shards, logger: logger)
    }

    /// Recovers what a previous run of this worker id left in its in-flight
    /// lists (it crashed or was killed), before taking new jobs.
    func recoverOrphans() throws(LLMQError) {
        let connection = try RedisConnection(url)
        // A drain request is for the run it was made to, not for a fresh start.
        try connection.command(["DEL", keys.control(id)])
        // Producers and tools without the configuration learn the shards from here.
        for (mode, m) in config.modes {
            try connection.command(m.shards > 1 ? ["HSET", keys.shards, mode.rawValue, String(m.shards)] : ["HDEL", keys.shards, mode.rawValue])
        }
        let n = try reaper().recover(worker: id, modes: config.modes.keys.sorted(), connection: connection)
        if n > 0 { logger.warning("recovered \(n) jobs a previous run of this worker left in flight") }
    }
}
