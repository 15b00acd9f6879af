import Synchronization

/// Bounds the upstream requests one worker process runs at once per provider
/// (`max_concurrency`): an async semaphore per provider, first come first served.
/// Providers without a limit pass straight through.
///
/// Thread rules: any task; state guarded by `gates`.
public final class ProviderLimiter: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct Gate {
        var free: Int
        var waiters: [Waiter] = []
    }

    private let gates: Mutex<[String: Gate]>
    private let nextID = Atomic<UInt64>(0)
    public let limits: [String: Int]

    public init(limits: [String: Int]) {
        self.limits = limits
        gates = Mutex(limits.mapValues { Gate(free: $0) })
    }

    /// Waits for one of the provider's permits. Returns whether one is held (and
    /// must be given back with `release`): false only when the task was cancelled
    /// while waiting, or immediately for a provider without a limit.
    public func acquire(_ provider: String) async -> Bool {
        guard limits[provider] != nil else { return false }
        let taken = gates.withLock { g -> Bool in
            guard g[provider]!.free > 0 else { return false }
            g[provider]!.free -= 1
            return true
        }
        if taken { return true }
        let id = nextID.add(1, ordering: .relaxed).newValue
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let now = gates.withLock { g -> Bool? in
                    if Task.isCancelled { return false }
                    if g[provider]!.free > 0 {
                        g[provider]!.free -= 1
                        return true
                    }
                    g[provider]!.waiters.append(Waiter(id: id, continuation: c))
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            let c = gates.withLock { g -> CheckedContinuation<Bool, Never>? in
                guard let k = g[provider]!.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return g[provider]!.waiters.remove(at: k).continuation
            }
            c?.resume(returning: false)
        }
    }

    /// Gives a permit back; the longest waiter gets it.
    public func release(_ provider: String) {
        guard limits[provider] != nil else { return }
        let next = gates.withLock { g -> CheckedContinuation<Bool, Never>? in
            if g[provider]!.waiters.isEmpty {
                g[provider]!.free += 1
                return nil
            }
            return g[provider]!.waiters.removeFirst().continuation
        }
        next?.resume(returning: true)
    }

    /// Permits in use and tasks waiting, per limited provider (telemetry, tests).
    public var usage: [String: (inUse: Int, waiting: Int)] {
        gates.withLock { g in
            g.reduce(into: [:]) { out, e in out[e.key] = (limits[e.key]! - e.value.free, e.value.waiters.count) }
        }
    }
}
