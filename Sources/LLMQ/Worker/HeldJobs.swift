import Synchronization

/// The jobs this worker knows it holds, per key family, as the exact bytes in its
/// in-flight lists. After a fetch whose reply was lost, comparing a list with
/// this record finds a job Redis moved but the worker never saw.
public final class HeldJobs: Sendable {
    /// A job's bytes as a key, hashed in one pass (an array of bytes hashes one byte at a time).
    struct Key: Hashable {
        let bytes: [UInt8]

        func hash(into hasher: inout Hasher) {
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }

    private struct State {
        var held: [QueueFamily: [Key: Int]] = [:]
        /// Finished since a reconciliation of that family began.
        var finishedSince: [QueueFamily: [Key: Int]] = [:]
        var reconciling: Set<QueueFamily> = []
    }

    private let state = Mutex(State())

    public init() {}

    public func add(_ raw: [UInt8], family f: QueueFamily) {
        state.withLock { $0.held[f, default: [:]][Key(bytes: raw), default: 0] += 1 }
    }

    public func remove(_ raw: [UInt8], family f: QueueFamily) {
        let key = Key(bytes: raw)
        state.withLock { s in
            s.held[f]?.takeOne(key)
            if s.reconciling.contains(f) { s.finishedSince[f, default: [:]][key, default: 0] += 1 }
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
            for (key, n) in s.finishedSince[f] ?? [:] { known[key, default: 0] += n }
            s.finishedSince[f] = nil
            var out: [[UInt8]] = []
            for raw in list where !known.takeOne(Key(bytes: raw)) { out.append(raw) }
            return out
        }
    }
}

extension Dictionary where Value == Int {
    /// Counts one `key` off, forgetting it at zero; false when it was not there.
    @discardableResult
    mutating func takeOne(_ key: Key) -> Bool {
        guard let i = index(forKey: key) else { return false }
        if values[i] > 1 { values[i] -= 1 } else { remove(at: i) }
        return true
    }
}
