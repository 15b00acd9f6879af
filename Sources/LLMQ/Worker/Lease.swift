import Synchronization

/// This worker's claim on the jobs it holds. The heartbeat renews it; once it
/// has gone `fenceAfter` seconds without a renewal, a reaper elsewhere may soon
/// judge the worker lost and put its jobs back, so from then on the worker
/// writes nothing for them (self-fencing) and aborts their transfers.
///
/// Each lapse starts a new epoch: a job keeps the epoch it was taken under, and
/// a renewal after a lapse never revives an older epoch, so work that was cut
/// off by a stall (SIGSTOP, a long GC-like pause, a hung connection) stays cut
/// off even if its thread runs again after the heartbeat came back.
///
/// Thread rules: any thread; state guarded by a mutex. Times are monotonic.
public final class Lease: Sendable {
    private struct State {
        var fenceAfter: UInt64
        var renewedAt: UInt64
        var epoch: UInt64 = 1
        /// Set by a lapse; cleared once the worker recovered what it held under the old epoch.
        var recovering = false
    }

    private let state: Mutex<State>
    /// Nanoseconds after the last renewal at which the lease counts as lost.
    let fenceAfter: UInt64

    /// `ttl`: the heartbeat's expiry, after which reapers may act. The lease
    /// lapses one margin earlier (a fifth of it, at least 1 s when that fits).
    public init(ttl: Double, now: UInt64 = Clock.nowNanos()) {
        let margin = min(max(ttl / 5, 1), ttl / 2)
        fenceAfter = UInt64(max(0.1, ttl - margin) * 1e9)
        state = Mutex(State(fenceAfter: fenceAfter, renewedAt: now))
    }

    public var epoch: UInt64 { state.withLock { $0.epoch } }

    /// Whether work taken under `epoch` may still write.
    public func holds(_ epoch: UInt64, now: UInt64 = Clock.nowNanos()) -> Bool {
        state.withLock { s in s.epoch == epoch && !s.recovering && now &- s.renewedAt < s.fenceAfter }
    }

    /// Whether the lease has lapsed (no renewal for `fenceAfter`).
    public func lapsed(now: UInt64 = Clock.nowNanos()) -> Bool {
        state.withLock { s in now &- s.renewedAt >= s.fenceAfter }
    }

    /// Whether new work may be taken: the lease is held and nothing from a lapse is left to recover.
    public func admitsWork(now: UInt64 = Clock.nowNanos()) -> Bool {
        state.withLock { s in !s.recovering && now &- s.renewedAt < s.fenceAfter }
    }

    /// Starts a new epoch when the lease has lapsed and no lapse is pending yet.
    /// Returns true when it did: the caller must stop every job of the old epoch.
    @discardableResult
    public func fenceIfLapsed(now: UInt64 = Clock.nowNanos()) -> Bool {
        state.withLock { s in Self.fence(&s, now: now) }
    }

    /// Records a renewal whose command was sent at `sentAt` and acknowledged by Redis.
    /// Returns true while a lapse is pending: the caller must recover this worker's
    /// in-flight lists (what the old epoch held), then call `recovered()`.
    @discardableResult
    public func renewed(sentAt: UInt64) -> Bool {
        state.withLock { s in
            _ = Self.fence(&s, now: sentAt)
            s.renewedAt = max(s.renewedAt, sentAt)
            return s.recovering
        }
    }

    private static func fence(_ s: inout State, now: UInt64) -> Bool {
        guard !s.recovering, now > s.renewedAt, now - s.renewedAt >= s.fenceAfter else { return false }
        s.epoch += 1
        s.recovering = true
        return true
    }

    public func recovered() { state.withLock { $0.recovering = false } }
}
