import Foundation
import Synchronization

/// A worker's view of the engines its supervisor manages (see `EngineState`
/// for the files it reads and writes).
///
/// `JobRunner` asks it before a call: an engine that is starting (or a lazy one
/// that is stopped) makes its target look like a cooling provider for
/// `waitSeconds`, so the job waits in the delayed set without spending an
/// attempt, and the FIFO asks the supervisor to start it; an engine that could
/// not start ends the call `upstream_unavailable` (the route may fall back).
///
/// Thread rules: any thread; state is guarded by its mutexes. A state is read
/// from disk at most every 100 ms per provider, a use noted at most once a
/// second per provider.
public final class EngineGate: Sendable {
    /// How long a job waits in the delayed set before it looks at a starting engine again.
    public static let waitSeconds = 1.0

    let dir: String
    let managed: Set<String>
    private let cache = Mutex<[String: (state: EngineState?, at: UInt64)]>([:])
    private let noted = Mutex<[String: UInt64]>([:])

    public init(dir: String, managed: Set<String>) {
        self.dir = dir
        self.managed = managed
    }

    /// The gate of a worker its supervisor runs engines for; nil when it runs none (or the worker runs alone,
    /// where a provider's `launch` is not the worker's to act on).
    public static func fromEnvironment(config: FarmConfig, environment: [String: String] = ProcessInfo.processInfo.environment) -> EngineGate? {
        guard let dir = environment[EngineState.environmentKey], !dir.isEmpty else { return nil }
        let managed = Set(config.providers.filter { $0.value.launch != nil }.keys)
        return managed.isEmpty ? nil : EngineGate(dir: dir, managed: managed)
    }

    public func state(_ provider: String) -> EngineState? {
        let now = Clock.nowNanos()
        if let hit = cache.withLock({ $0[provider] }), now &- hit.at < 100_000_000 { return hit.state }
        let s = EngineState.read(dir: dir, provider: provider)
        cache.withLock { $0[provider] = (s, now) }
        return s
    }

    /// Seconds a job should wait before it tries `provider` again; nil when it may be called now.
    public func waitSeconds(_ provider: String) -> Double? {
        guard managed.contains(provider) else { return nil }
        switch state(provider) {
        case .ready?, .failed?: return nil
        case .starting?, .stopped?, nil:
            noteUse(provider)
            return Self.waitSeconds
        }
    }

    /// The error a call to `provider` ends with when its engine could not start; nil otherwise.
    public func unavailable(_ provider: String) -> LLMQError? {
        guard managed.contains(provider), case .failed(let why)? = state(provider) else { return nil }
        return LLMQError(.upstreamUnavailable, "the local engine of provider \(provider) is not running: \(why)")
    }

    /// Tells the supervisor a job wants the engine: starts a lazy one, and postpones its idle stop.
    public func noteUse(_ provider: String) {
        guard managed.contains(provider) else { return }
        let now = Clock.nowNanos()
        let due = noted.withLock { n -> Bool in
            if let last = n[provider], now &- last < 1_000_000_000 { return false }
            n[provider] = now
            return true
        }
        guard due else { return }
        let fd = open(EngineState.fifo(dir), O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return }  // ENXIO: no supervisor reads it; nothing to tell
        let line = Array((provider + "\n").utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}
