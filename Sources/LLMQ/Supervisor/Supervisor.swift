import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Runs N `llmq worker` processes, restarts one that dies (with backoff),
/// and on graceful shutdown sends each SIGTERM and waits for their drains.
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
    /// Restarts so far, for metrics and tests.
    public let restarts = Atomic<Int>(0)
    public let onRestart: @Sendable (Int) -> Void

    public init(settings: Settings, logger: Logger, onRestart: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.settings = settings
        self.logger = logger
        self.onRestart = onRestart
    }

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
            // A signal that arrived between the check above and the spawn must still reach this child.
            if stopping.load(ordering: .relaxed) { child.signal(SIGTERM) }
            let started = Clock.nowNanos()
            let status = await child.wait()
            children.withLock { _ = $0.removeValue(forKey: slot) }
            if stopping.load(ordering: .relaxed) {
                logger.info("worker \(slot) (pid \(child.pid)) stopped: \(ChildProcess.describe(status))")
                return
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
