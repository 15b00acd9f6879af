import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The farm's managed engines: one `ManagedEngine` per provider with a
/// `launch:` block, and the FIFO through which workers ask for them (see
/// `EngineState`).
///
/// As a service it runs until the farm shuts down, then stops every engine it
/// started. List it before the supervisor in the service group: a group shuts
/// down in reverse order, so the workers drain first, while their engines still
/// answer.
public final class EngineManager: Service {
    let dir: String
    let logger: Logger
    private let engines = Mutex<[String: ManagedEngine]>([:])
    private let stopping = Atomic<Bool>(false)
    private let initial: FarmConfig

    /// `dir`: the farm's private folder, shared with its workers through `EngineState.environmentKey`.
    public init(config: FarmConfig, dir: String, logger: Logger) throws(LLMQError) {
        self.dir = dir
        self.logger = logger
        self.initial = config
        guard mkfifo(EngineState.fifo(dir), 0o600) == 0 || errno == EEXIST else {
            throw LLMQError(.configuration, "cannot create \(EngineState.fifo(dir)): \(String(cString: strerror(errno)))")
        }
    }

    /// Whether the configuration has any provider with a `launch:` block.
    public static func needed(_ config: FarmConfig) -> Bool { config.providers.values.contains { $0.launch != nil } }

    public var current: [String: ManagedEngine] { engines.withLock { $0 } }

    public func run() async throws {
        await apply(initial)
        await runOnThread(named: "llmq-engine-fifo", loop: { self.readRequests() }, stop: { self.stopping.store(true, ordering: .relaxed) })
        let all = engines.withLock { Array($0.values) }
        all.forEach { $0.stop() }
        for e in all { await e.stopped() }
        logger.info("managed engines stopped")
    }

    /// Starts engines that are new, restarts those whose launch spec (or readiness check) changed, stops removed ones.
    public func apply(_ config: FarmConfig) async {
        let wanted = config.providers.filter { $0.value.launch != nil }
        var retired: [ManagedEngine] = []
        var added: [ManagedEngine] = []
        engines.withLock { current in
            for (name, engine) in current {
                guard let p = wanted[name] else {
                    retired.append(engine)
                    current.removeValue(forKey: name)
                    continue
                }
                let next = ManagedEngine(name: name, provider: p, config: config, dir: dir, logger: logger)
                if next.identity != engine.identity {
                    retired.append(engine)
                    current[name] = next
                    added.append(next)
                }
            }
            for (name, p) in wanted where current[name] == nil {
                let e = ManagedEngine(name: name, provider: p, config: config, dir: dir, logger: logger)
                current[name] = e
                added.append(e)
            }
        }
        for e in retired {
            logger.notice("[engine \(e.name)] its launch settings changed or were removed; stopping it")
            e.stop()
            await e.stopped()
        }
        added.forEach { $0.start() }
    }

    /// Reads provider names that workers write to the FIFO; ends once the farm stops.
    private func readRequests() {
        let fd = open(EngineState.fifo(dir), O_RDWR | O_NONBLOCK | O_CLOEXEC)  // read-write: never EOF while no worker writes
        guard fd >= 0 else {
            logger.error("cannot open \(EngineState.fifo(dir)): \(String(cString: strerror(errno))); lazy engines will not start")
            return
        }
        defer { close(fd) }
        var pending: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while !stopping.load(ordering: .relaxed) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 250) > 0 else { continue }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { continue }
            pending.append(contentsOf: buf[0..<n])
            while let nl = pending.firstIndex(of: 10) {
                let name = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                engines.withLock { $0[name] }?.noteUse()
            }
            if pending.count > 4096 { pending.removeAll() }
        }
    }
}
