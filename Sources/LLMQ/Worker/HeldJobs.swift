import Synchronization

/// The jobs this worker knows it holds, per key family, as the exact bytes in its
/// in-flight lists. After a fetch whose reply was lost, comparing a list with
/// this record finds a job Redis moved but the worker never saw.
public final class HeldJobs: Sendable {
    private struct State {
        var held: [QueueFamily: [[UInt8]: Int]] = [:]
        /// Finished since a reconciliation of that family began.
        var finishedSince: [QueueFamily: [[UInt8]: Int]] = [:]
        var reconciling: Set<QueueFamily> = []
    }

    private let state = Mutex(State())

    public init() {}

    public func add(_ raw: [UInt8], family f: QueueFamily) {
        state.withLock { $0.held[f, default: [:]][raw, default: 0] += 1 }
    }

    public func remove(_ raw: [UInt8], family f: QueueFamily) {
        state.withLock { s in
            if let n = s.held[f]?[raw] { s.held[f]![raw] = n > 1 ? n - 1 : nil }
            if s.reconciling.contains(f) { s.finishedSince[f, default: [:]][raw, default: 0] += 1 }
        }
    }

    /// Starts a reconciliation: call before reading the in-flight list.
    public func beginReconcile(family f: QueueFamily) {
        state.withLock { s in
            s.reconciling.insert(f)
            s.finishedSince[f] = [:]
        }
    }

    /// The jobs in `list` (read after `beginReconcile`) that this worker does not know it holds.
    public func orphans(in list: [[UInt8]], family f: QueueFamily) -> [[UInt8]] {
        state.withLock { s in
            s.reconciling.remove(f)
            var known = s.held[f] ?? [:]
            for (raw, n) in s.finishedSince[f] ?? [:] { known[raw, default: 0] += n }
            s.finishedSince[f] = nil
            var out: [[UInt8]] = []
            for raw in list {
                if let n = known[raw], n > 0 { known[raw] = n - 1 } else { out.append(raw) }
            }
            return out
        }
    }
}
