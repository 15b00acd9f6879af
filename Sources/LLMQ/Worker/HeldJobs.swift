import Synchronization

/// The jobs this worker knows it holds, per mode, as the exact bytes in its
/// in-flight lists. After a fetch whose reply was lost, comparing a list with
/// this record finds a job Redis moved but the worker never saw.
public final class HeldJobs: Sendable {
    private struct State {
        var held: [Mode: [[UInt8]: Int]] = [:]
        /// Finished since a reconciliation of that mode began.
        var finishedSince: [Mode: [[UInt8]: Int]] = [:]
        var reconciling: Set<Mode> = []
    }

    private let state = Mutex(State())

    public init() {}

    public func add(_ raw: [UInt8], mode: Mode) {
        state.withLock { $0.held[mode, default: [:]][raw, default: 0] += 1 }
    }

    public func remove(_ raw: [UInt8], mode: Mode) {
        state.withLock { s in
            if let n = s.held[mode]?[raw] { s.held[mode]![raw] = n > 1 ? n - 1 : nil }
            if s.reconciling.contains(mode) { s.finishedSince[mode, default: [:]][raw, default: 0] += 1 }
        }
    }

    /// Starts a reconciliation: call before reading the in-flight list.
    public func beginReconcile(mode: Mode) {
        state.withLock { s in
            s.reconciling.insert(mode)
            s.finishedSince[mode] = [:]
        }
    }

    /// The jobs in `list` (read after `beginReconcile`) that this worker does not know it holds.
    public func orphans(in list: [[UInt8]], mode: Mode) -> [[UInt8]] {
        state.withLock { s in
            s.reconciling.remove(mode)
            var known = s.held[mode] ?? [:]
            for (raw, n) in s.finishedSince[mode] ?? [:] { known[raw, default: 0] += n }
            s.finishedSince[mode] = nil
            var out: [[UInt8]] = []
            for raw in list {
                if let n = known[raw], n > 0 { known[raw] = n - 1 } else { out.append(raw) }
            }
            return out
        }
    }
}
