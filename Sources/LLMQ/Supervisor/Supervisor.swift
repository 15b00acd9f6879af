import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Runs N `llmq worker` processes, restarts one that dies (with backoff),
/// and on graceful shutdown sends each SIGTERM and waits for their drains.
/// `roll` replaces the workers one at a time for a configuration reload.
public final class Supervisor: Service {
    public struct Settings: Sendable {
        public var workers: Int
        /// Arguments after the executable that start one worker; `{slot}` becomes its number.
        public var workerArguments: [String]
        public var executable: String
        public var restartBackoff: Double
        public var restartBackoffMax: Double
        /// The workers' environment: this process's, with the Swift backtracer off unless `SWIFT_BACKTRACE` says otherwise.
        public var environment: [String: String]

        public init(workers: Int, workerArguments: [String], executable: String = ChildProcess.currentExecutable,
                    restartBackoff: Double = 0.5, restartBackoffMax: Double = 30,
                    environment: [String: String] = Supervisor.workerEnvironment()) {
            self.workers = workers
            self.workerArguments = workerArguments
            self.executable = executable
            self.restartBackoff = restartBackoff
            self.restartBackoffMax = restartBackoffMax
            self.environment = environment
        }
    }

    /// `base` with `SWIFT_BACKTRACE=enable=no` unless it sets `SWIFT_BACKTRACE` itself.
    ///
    /// With the Swift runtime's backtracer on, a crashing worker is frozen with
    /// its jobs while a `swift-backtrace` process symbolicates the binary for
    /// seconds (with the worker's descriptors), and a worker sent SIGABRT or
    /// SIGSEGV from outside prints a backtrace and goes on running instead of
    /// dying and being restarted. Off, a crash ends the worker at once; the
    /// runtime still writes its `Fatal error: ...` line to the log, and the
    /// supervisor restarts the worker. Set `SWIFT_BACKTRACE` (for example
    /// `enable=yes,interactive=no`) in the farm's environment to get backtraces.
    public static func workerEnvironment(_ base: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var env = base
        if env["SWIFT_BACKTRACE"] == nil { env["SWIFT_BACKTRACE"] = "enable=no" }
        return env
    }

    let settings: Settings
    let logger: Logger
    private let children = Mutex<[Int: ChildProcess]>([:])
    private let stopping = Atomic<Bool>(false)
    /// Slots a reload drains on purpose: `replacing` start again at once, `retiring` stay stopped.
    private let planned = Mutex<(replacing: Set<Int>, retiring: Set<Int>, spawnWaiters: [Int: CheckedContinuation<ChildProcess?, Never>])>(([], [], [:]))
    private let slotCount: Atomic<Int>
    /// Slots a reload adds, for the task group of `run`.
    private let added: (stream: AsyncStream<Int>, continuation: AsyncStream<Int>.Continuation)
    /// Restarts so far, for metrics and tests.
    public let restarts = Atomic<Int>(0)
    public let onRestart: @Sendable (Int) -> Void

    public init(settings: Settings, logger: Logger, onRestart: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.settings = settings
        self.logger = logger
        self.onRestart = onRestart
        self.slotCount = Atomic(settings.workers)
        self.added = AsyncStream<Int>.makeStream()
    }

    /// Worker processes the supervisor keeps running now.
    public var workers: Int { slotCount.load(ordering: .relaxed) }

    public var pids: [Int: pid_t] { children.withLock { $0.mapValues(\.pid) } }

    public func run() async throws {
        logger.info("supervisor starting \(settings.workers) workers")
        // Cancelled (another service of the group failed) or shut down gracefully: either way the
        // workers are asked to drain, and the supervisor returns once every one has exited.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    for slot in 0..<settings.workers {
                        group.addTask { await self.keepRunning(slot: slot) }
                    }
                    for await slot in added.stream {
                        group.addTask { await self.keepRunning(slot: slot) }
                    }
                }
            } onGracefulShutdown: {
                self.drainAll()
            }
        } onCancel: {
            self.drainAll()
        }
        logger.info("supervisor stopped; all workers exited")
    }

    private func drainAll() {
        stopping.store(true, ordering: .relaxed)
        added.continuation.finish()
        let waiters = planned.withLock { p in
            defer { p.spawnWaiters = [:] }
            return Array(p.spawnWaiters.values)
        }
        waiters.forEach { $0.resume(returning: nil) }
        let all = children.withLock { Array($0.values) }
        logger.info("supervisor draining \(all.count) workers")
        all.forEach { $0.signal(SIGTERM) }
    }

    private func keepRunning(slot: Int) async {
        var environment = settings.environment
        environment[SupervisorWatch.environmentKey] = String(getpid())
        var backoff = settings.restartBackoff
        while !stopping.load(ordering: .relaxed) {
            let args = [settings.executable] + settings.workerArguments.map { $0.replacingOccurrences(of: "{slot}", with: String(slot)) }
            let child: ChildProcess
            do {
                child = try ChildProcess(args, environment: environment)
            } catch {
                logger.error("cannot start worker \(slot): \(error.message)")
                try? await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, settings.restartBackoffMax)
                continue
            }
            children.withLock { $0[slot] = child }
            planned.withLock { $0.spawnWaiters.removeValue(forKey: slot) }?.resume(returning: child)
            // A signal that arrived between the check above and the spawn must still reach this child.
            if stopping.load(ordering: .relaxed) { child.signal(SIGTERM) }
            let started = Clock.nowNanos()
            let status = await child.wait()
            children.withLock { _ = $0.removeValue(forKey: slot) }
            if stopping.load(ordering: .relaxed) {
                logger.info("worker \(slot) (pid \(child.pid)) stopped: \(ChildProcess.describe(status))")
                return
            }
            let (replaced, retired) = planned.withLock { ($0.replacing.remove(slot) != nil, $0.retiring.remove(slot) != nil) }
            if retired {
                logger.notice("worker \(slot) (pid \(child.pid)) drained and retired by a reload: \(ChildProcess.describe(status))")
                return
            }
            if replaced {
                logger.notice("worker \(slot) (pid \(child.pid)) drained for a reload (\(ChildProcess.describe(status))); starting it on the new configuration")
                backoff = settings.restartBackoff
                continue
            }
            if Clock.millis(since: started) > 10_000 { backoff = settings.restartBackoff }
            logger.error("worker \(slot) (pid \(child.pid)) died (\(ChildProcess.describe(status))); restarting in \(backoff) s")
            restarts.add(1, ordering: .relaxed)
            onRestart(slot)
            try? await Task.sleep(for: .seconds(backoff))
            backoff = min(backoff * 2, settings.restartBackoffMax)
        }
    }
}

extension Supervisor {
    /// Replaces the workers one at a time, for a configuration reload: drains
    /// one (SIGTERM), waits for it to exit, starts its successor (which reads
    /// the configuration anew), and waits until `serving` says the successor
    /// took work before it drains the next. So no job is lost (a drain finishes
    /// or puts back what it holds) and no more than one worker is ever away.
    /// Then starts or retires workers to reach `workers`.
    ///
    /// Returns nil once done, else why it stopped (the farm is shutting down, or a
    /// successor did not come up within `startTimeout`: the rest keep running as they are).
    public func roll(workers target: Int, startTimeout: Double = 60,
                     serving: @escaping @Sendable (_ slot: Int, _ pid: pid_t) async -> Bool) async -> String? {
        let before = workers
        for slot in 0..<min(before, target) {
            if stopping.load(ordering: .relaxed) { return "the farm is shutting down" }
            guard let old = children.withLock({ $0[slot] }) else { continue }  // restarting anyway, on the new configuration
            let successor: ChildProcess? = await withCheckedContinuation { c in
                guard expectSpawn(slot, c, replacing: true) else { return }
                logger.notice("reload: draining worker \(slot) (pid \(old.pid))")
                old.signal(SIGTERM)
            }
            guard let successor else { return "the farm is shutting down" }
            if let why = await waitServing(slot: slot, child: successor, timeout: startTimeout, serving: serving) { return why }
        }
        if target > before {
            for slot in before..<target {
                slotCount.store(slot + 1, ordering: .relaxed)
                let child: ChildProcess? = await withCheckedContinuation { c in
                    guard expectSpawn(slot, c, replacing: false) else { return }
                    added.continuation.yield(slot)
                }
                guard let child else { return "the farm is shutting down" }
                if let why = await waitServing(slot: slot, child: child, timeout: startTimeout, serving: serving) { return why }
            }
        } else if target < before {
            for slot in (target..<before).reversed() {
                slotCount.store(slot, ordering: .relaxed)
                guard let old = children.withLock({ $0[slot] }) else { continue }
                planned.withLock { _ = $0.retiring.insert(slot) }
                logger.notice("reload: retiring worker \(slot) (pid \(old.pid))")
                old.signal(SIGTERM)
                await old.wait()
            }
        }
        return nil
    }

    /// Registers `c` to receive the next child started in `slot`; resumes it with nil (and returns false)
    /// once the supervisor stops, since `drainAll` may already have collected the waiters.
    private func expectSpawn(_ slot: Int, _ c: CheckedContinuation<ChildProcess?, Never>, replacing: Bool) -> Bool {
        let registered = planned.withLock { p -> Bool in
            guard !stopping.load(ordering: .relaxed) else { return false }
            if replacing { p.replacing.insert(slot) }
            p.spawnWaiters[slot] = c
            return true
        }
        if !registered { c.resume(returning: nil) }
        return registered
    }

    private func waitServing(slot: Int, child: ChildProcess, timeout: Double, serving: @Sendable (Int, pid_t) async -> Bool) async -> String? {
        let end = Clock.nowNanos() &+ UInt64(timeout * 1e9)
        while Clock.nowNanos() < end {
            if stopping.load(ordering: .relaxed) { return "the farm is shutting down" }
            if let s = child.exitStatus { return "worker \(slot) exited (\(ChildProcess.describe(s))) on the new configuration; see its log lines above" }
            if await serving(slot, child.pid) { return nil }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return "worker \(slot) (pid \(child.pid)) did not start serving within \(Int(timeout)) s"
    }
}
