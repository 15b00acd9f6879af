import Synchronization

/// Whether a job's cancel key was set when the job left its queue.
///
/// A fetcher hands a job over before Redis answers: the question goes out in the
/// fetcher's next round trip (with its next batch of moves), so the answer usually
/// arrives while the job's task is still being scheduled and parsing the job. The
/// task waits for it only before its first step (no write, no provider call yet).
public final class CancelKeyAnswer: Sendable {
    private enum State {
        case pending([CheckedContinuation<Bool, Never>])
        case answered(Bool)
    }

    private let state: Mutex<State>

    /// An answer still to come from Redis.
    public init() { state = Mutex(.pending([])) }

    /// An answer known already.
    public init(_ set: Bool) { state = Mutex(.answered(set)) }

    /// Records the answer; later answers are ignored.
    public func resolve(_ set: Bool) {
        let waiting = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            guard case .pending(let w) = s else { return [] }
            s = .answered(set)
            return w
        }
        for c in waiting { c.resume(returning: set) }
    }

    /// The answer, once it came.
    public var isSet: Bool {
        get async {
            if case .answered(let set) = state.withLock({ $0 }) { return set }
            return await withCheckedContinuation { c in
                let now = state.withLock { s -> Bool? in
                    switch s {
                    case .answered(let set): return set
                    case .pending(var w):
                        w.append(c)
                        s = .pending(w)
                        return nil
                    }
                }
                if let now { c.resume(returning: now) }
            }
        }
    }
}
