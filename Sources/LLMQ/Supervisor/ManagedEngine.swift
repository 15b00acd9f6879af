import Foundation
import Logging

/// One local engine (vLLM, Ollama, llama-server, TGI) that the farm's
/// supervisor starts, health-checks, restarts and stops: a provider's `launch:`.
///
/// - An engine that already answers at `ready_url` is reused, not started a
///   second time; it is watched, and left running when the farm stops.
/// - A start may take `ready_timeout_s`; past it, the engine is reported
///   failed (jobs end `upstream_unavailable`) until a later start succeeds.
///   Starts are retried with the farm's restart backoff.
/// - An engine that dies is restarted with that backoff; jobs wait meanwhile.
/// - Stopping sends SIGTERM to its process group, SIGKILL after `grace_s`.
/// - A lazy engine starts when a worker notes a job for it, and stops after
///   `idle_stop_s` without one.
///
/// Its output goes to the farm's log, each line prefixed with `[engine NAME]`.
///
/// Thread rules: the engine runs on a thread of its own; `noteUse`, `stop` and
/// `stopped()` from any thread. Mutable state is guarded by `condition`.
public final class ManagedEngine: @unchecked Sendable {  // mutable state is guarded by `condition`
    public let name: String
    public let spec: LaunchConfig
    let readyURL: String
    let models: [String]
    let dir: String
    let backoffBase: Double
    let backoffMax: Double
    let logger: Logger

    private let condition = NSCondition()
    private var stopRequested = false
    private var wanted = false
    private var lastUse: UInt64 = 0
    private var done = false
    private var doneWaiters: [CheckedContinuation<Void, Never>] = []
    private var current: EngineState?
    private var restartCount = 0

    public init(name: String, provider: ProviderConfig, config: FarmConfig, dir: String, logger: Logger) {
        self.name = name
        self.spec = provider.launch!
        self.readyURL = LaunchConfig.readyURL(for: provider) ?? ""
        self.models = LaunchConfig.models(of: name, in: config)
        self.dir = dir
        self.backoffBase = config.restartBackoffS
        self.backoffMax = config.restartBackoffMaxS
        var l = logger
        l[metadataKey: "provider"] = "\(name)"
        self.logger = l
    }

    /// What makes two engines the same: a reload restarts an engine only when this changed.
    public var identity: String { "\(spec.command)|\(spec.env.sorted { $0.key < $1.key })|\(readyURL)|\(models)|\(spec.lazy)" }

    public var state: EngineState? { condition.locked { current } }
    public var restarts: Int { condition.locked { restartCount } }

    public func start() {
        let t = Thread { [self] in
            loop()
            let waiters = condition.locked {
                done = true
                defer { doneWaiters = [] }
                return doneWaiters
            }
            waiters.forEach { $0.resume() }
        }
        t.name = "llmq-engine-\(name)"
        t.start()
    }

    /// A job wants the engine: a lazy one starts, and its idle stop is postponed.
    public func noteUse() {
        condition.locked {
            wanted = true
            lastUse = Clock.nowNanos()
            condition.broadcast()
        }
    }

    /// Stops the engine (if this farm started it) and ends its thread.
    public func stop() {
        condition.locked {
            stopRequested = true
            condition.broadcast()
        }
    }

    /// Returns once the engine's thread ended (after `stop`).
    public func stopped() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = condition.locked { () -> Bool in
                if done { return true }
                doneWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    private var stopping: Bool { condition.locked { stopRequested } }

    /// `idle_stop_s`, but at least 3 s: a job that waited for the engine in the delayed set comes back
    /// up to `EngineGate.waitSeconds` after it is ready, and must still find it running.
    var idleStop: Double { max(spec.idleStopS, 3 * EngineGate.waitSeconds) }

    /// Waits up to `seconds` or until poked (a use, a stop, the child's exit).
    private func pause(_ seconds: Double) {
        condition.locked {
            if !stopRequested { _ = condition.wait(until: Date().addingTimeInterval(seconds)) }
        }
    }

    /// Waits the whole `seconds` (a backoff: jobs noting a use do not cut it short) unless the engine is stopped.
    private func rest(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        condition.locked {
            while !stopRequested && Date() < end { _ = condition.wait(until: end) }
        }
    }

    private func poke() { condition.locked { condition.broadcast() } }

    private func publish(_ s: EngineState) {
        let changed = condition.locked { () -> Bool in
            defer { current = s }
            return current != s
        }
        guard changed else { return }
        s.write(dir: dir, provider: name)
        EngineMetrics.up(provider: name, s == .ready)
    }

    private enum StartOutcome { case ready, exited(Int32), timedOut, stopped }

    private func loop() {
        let probe = EngineProbe(url: readyURL, models: models)
        var delay = backoffBase
        // When the engine became unavailable: `ready_timeout_s` counts from here, across retries.
        var since: UInt64?
        var failed = false
        while !stopping {
            if spec.lazy {
                let go = condition.locked { () -> Bool in
                    defer { wanted = false }
                    return wanted
                }
                if !go {
                    if !failed { publish(.stopped) }
                    since = nil
                    condition.locked {
                        while !wanted && !stopRequested { condition.wait() }
                    }
                    continue
                }
            }
            if probe.check() == nil {
                publish(.ready)
                failed = false
                since = nil
                logger.notice("[engine \(name)] reusing the engine that already answers at \(readyURL); this farm did not start it and leaves it running")
                while !stopping && probe.check() == nil { rest(2) }
                if !stopping { logger.warning("[engine \(name)] the engine at \(readyURL) stopped answering; starting one") }
                continue
            }
            if since == nil { since = Clock.nowNanos() }
            if !failed { publish(.starting) }
            let child: ChildProcess
            do {
                child = try spawn()
            } catch {
                logger.error("[engine \(name)] \(error.message); check launch.command")
                failed = failIfLate(since!, why: error.message) || failed
                if spec.lazy && !failed { condition.locked { wanted = true } }
                rest(delay)
                delay = min(delay * 2, backoffMax)
                continue
            }
            logger.info("[engine \(name)] started pid \(child.pid): \(spec.command.joined(separator: " "))")
            Task { [self] in
                await child.wait()
                poke()
            }
            switch awaitReady(child, probe: probe, since: since!) {
            case .stopped:
                terminate(child)
            case .timedOut:
                terminate(child)
                failed = true
                let why = "it did not answer at \(readyURL) within ready_timeout_s (\(ConfigLoader.RangeCheck.text(spec.readyTimeoutS)) s); see its output in the farm's log"
                logger.error("[engine \(name)] \(why)")
                publish(.failed(why))
                if spec.lazy { since = nil }
                rest(delay)
                delay = min(delay * 2, backoffMax)
            case .exited(let status):
                let why = "it exited (\(ChildProcess.describe(status))) before it answered at \(readyURL); see its output in the farm's log"
                logger.error("[engine \(name)] \(why); trying again in \(delay) s")
                failed = failIfLate(since!, why: why) || failed
                // A lazy engine keeps trying until it is ready or has failed; then the next job that wants it starts it.
                if spec.lazy && !failed { condition.locked { wanted = true } }
                if spec.lazy && failed { since = nil }
                rest(delay)
                delay = min(delay * 2, backoffMax)
            case .ready:
                let took = Clock.millis(since: since!) / 1000
                logger.notice("[engine \(name)] ready after \(String(format: "%.1f", took)) s")
                EngineMetrics.started(provider: name, seconds: took)
                publish(.ready)
                failed = false
                since = nil
                condition.locked { lastUse = Clock.nowNanos() }
                serve(child, probe: probe, delay: &delay, since: &since)
            }
        }
        publish(.stopped)
    }

    /// Marks the engine failed once `ready_timeout_s` passed since it became unavailable.
    private func failIfLate(_ since: UInt64, why: String) -> Bool {
        guard Clock.millis(since: since) / 1000 >= spec.readyTimeoutS else { return false }
        publish(.failed("it could not start within ready_timeout_s (\(ConfigLoader.RangeCheck.text(spec.readyTimeoutS)) s): \(why)"))
        return true
    }

    private func awaitReady(_ child: ChildProcess, probe: EngineProbe, since: UInt64) -> StartOutcome {
        while true {
            if stopping { return .stopped }
            if let s = child.exitStatus { return .exited(s) }
            if probe.check() == nil { return .ready }
            if Clock.millis(since: since) / 1000 >= spec.readyTimeoutS { return .timedOut }
            pause(0.25)
        }
    }

    /// Runs a ready engine until it dies (restart), idles out (lazy) or the farm stops.
    private func serve(_ child: ChildProcess, probe: EngineProbe, delay: inout Double, since: inout UInt64?) {
        let readyAt = Clock.nowNanos()
        var lastCheck = readyAt
        var misses = 0
        while true {
            if stopping {
                terminate(child)
                return
            }
            // A process that lives but no longer answers (hung, wedged GPU) is as good as dead.
            if Clock.millis(since: lastCheck) >= Self.healthInterval * 1000 {
                lastCheck = Clock.nowNanos()
                if let why = probe.check() {
                    misses += 1
                    logger.warning("[engine \(name)] health check \(misses) of \(Self.healthMisses) failed: \(why)")
                    if misses >= Self.healthMisses {
                        logger.error("[engine \(name)] stopped answering; restarting it")
                        terminate(child)
                    }
                } else {
                    misses = 0
                }
            }
            if let status = child.exitStatus {
                condition.locked { restartCount += 1 }
                EngineMetrics.restarted(provider: name)
                if Clock.millis(since: readyAt) > 60_000 { delay = backoffBase }
                logger.error("[engine \(name)] died (\(ChildProcess.describe(status))); restarting in \(delay) s")
                since = Clock.nowNanos()
                publish(.starting)
                if spec.lazy { condition.locked { wanted = true } }
                rest(delay)
                delay = min(delay * 2, backoffMax)
                return
            }
            if spec.lazy && spec.idleStopS > 0 {
                // Deciding and forgetting earlier wishes in one step: a job that notes a use after this starts it again.
                let idle = condition.locked { () -> Double in
                    let idle = Clock.millis(since: lastUse) / 1000
                    if idle >= idleStop { wanted = false }
                    return idle
                }
                if idle >= idleStop {
                    logger.notice("[engine \(name)] no job for \(ConfigLoader.RangeCheck.text(spec.idleStopS)) s (idle_stop_s); stopping it")
                    publish(.stopped)
                    terminate(child)
                    return
                }
                pause(min(1, idleStop - idle + 0.01))
            } else {
                pause(1)
            }
        }
    }

    /// SIGTERM to the engine's process group, SIGKILL after `grace_s`.
    /// Seconds between health checks of a running engine, and failed checks in a row that restart it.
    static let healthInterval = 5.0
    static let healthMisses = 3

    private func terminate(_ child: ChildProcess) {
        guard child.exitStatus == nil else { return }
        logger.info("[engine \(name)] stopping pid \(child.pid) (SIGTERM, SIGKILL after \(ConfigLoader.RangeCheck.text(spec.graceS)) s)")
        child.signalGroup(SIGTERM)
        let end = Clock.nowNanos() &+ UInt64(spec.graceS * 1e9)
        while child.exitStatus == nil && Clock.nowNanos() < end { usleep(20_000) }
        if child.exitStatus == nil {
            logger.warning("[engine \(name)] pid \(child.pid) ignored SIGTERM for \(ConfigLoader.RangeCheck.text(spec.graceS)) s; killing it")
            child.signalGroup(SIGKILL)
            let hard = Clock.nowNanos() &+ 5_000_000_000
            while child.exitStatus == nil && Clock.nowNanos() < hard { usleep(20_000) }
        }
        logger.info("[engine \(name)] stopped (\(child.exitStatus.map(ChildProcess.describe) ?? "still running"))")
    }

    private func spawn() throws(LLMQError) -> ChildProcess {
        guard let program = ChildProcess.which(spec.command[0]) else {
            throw LLMQError(.configuration, "cannot find \(spec.command[0]) on PATH")
        }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            throw LLMQError(.internal, "cannot create a pipe for the engine's output: \(String(cString: strerror(errno)))")
        }
        // Other children (workers) must not hold the pipe open; ChildProcess closes it in them too, this covers the rest.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var env = Supervisor.workerEnvironment()
        env.removeValue(forKey: EngineState.environmentKey)
        for (k, v) in spec.env { env[k] = v }
        let child: ChildProcess
        do {
            child = try ChildProcess([program] + spec.command.dropFirst(), environment: env, output: fds[1], ownProcessGroup: true)
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        close(fds[1])
        EngineOutput.forward(fd: fds[0], prefix: "[engine \(name)] ", logger: logger)
        return child
    }
}

extension NSCondition {
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
