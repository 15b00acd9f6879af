import ServiceLifecycle
import Synchronization

/// What /readyz answers: ready while Redis answered the last probe and no
/// drain has started. Liveness (/healthz) is only "the process answers".
///
/// Thread rules: any thread; every field is atomic.
public final class Readiness: Sendable {
    private let draining = Atomic<Bool>(false)
    private let redisReachable = Atomic<Bool>(false)
    private let drainRequested = Atomic<Bool>(false)

    public init() {}

    /// A graceful shutdown started: SIGTERM, SIGINT, or the group shutting down.
    public func startDraining() {
        draining.store(true, ordering: .sequentiallyConsistent)
        FarmMetrics.ready(isReady)
    }

    /// What the last probe of Redis found: whether it answered, and whether it
    /// holds a drain request for this worker (`llmq drain`, or its heartbeat says draining).
    public func probed(redisReachable reachable: Bool, drainRequested requested: Bool = false) {
        redisReachable.store(reachable, ordering: .sequentiallyConsistent)
        if requested { drainRequested.store(true, ordering: .sequentiallyConsistent) }
        FarmMetrics.ready(isReady)
    }

    public var isDraining: Bool {
        draining.load(ordering: .sequentiallyConsistent) || drainRequested.load(ordering: .sequentiallyConsistent)
    }

    public var isRedisReachable: Bool { redisReachable.load(ordering: .sequentiallyConsistent) }

    public var isReady: Bool { isRedisReachable && !isDraining }

    /// Why the process is not ready, for the /readyz body; nil when it is.
    public var reason: String? {
        if isDraining { return "draining" }
        if !isRedisReachable { return "redis unreachable" }
        return nil
    }
}

/// Flips `Readiness` to draining the moment the group's graceful shutdown
/// reaches it. Put it last in a `ServiceGroup`: shutdown runs in reverse
/// order, so it is told first, before the long drain of the services before it.
public struct DrainWatch: Service {
    let readiness: Readiness

    public init(readiness: Readiness) { self.readiness = readiness }

    public func run() async throws {
        try? await gracefulShutdown()
        readiness.startDraining()
    }
}
