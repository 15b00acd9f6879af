import Foundation
import Synchronization

/// Notices a lapsed lease even when the heartbeat itself is stuck (a hung
/// connection, a long stall): every `tick` it checks the lease, and when it
/// lapsed, or a renewal after a lapse started a new epoch, it calls `onFence`
/// with the epoch now current, so the worker stops everything older.
///
/// Thread rules: a thread of its own; `stop` from any thread.
public final class LeaseWatchdog: Sendable {
    let lease: Lease
    let tick: Double
    let onFence: @Sendable (_ epoch: UInt64) -> Void
    private let stopping = Atomic<Bool>(false)

    public init(lease: Lease, tick: Double = 0.1, onFence: @escaping @Sendable (_ epoch: UInt64) -> Void) {
        self.lease = lease
        self.tick = tick
        self.onFence = onFence
    }

    public func run() async {
        await runOnThread(named: "llmq-lease", loop: { self.loop() }, stop: { self.stop() })
    }

    public func stop() { stopping.store(true, ordering: .relaxed) }

    private func loop() {
        var seen = lease.epoch
        while !stopping.load(ordering: .relaxed) {
            lease.fenceIfLapsed()
            let now = lease.epoch
            if now != seen {
                seen = now
                onFence(now)
            }
            Thread.sleep(forTimeInterval: tick)
        }
    }
}
