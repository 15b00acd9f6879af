import Synchronization

/// What the rest of the worker can do to one running job: cancel it, cut it
/// short for a drain, or fence it off when the worker's lease lapsed. Each
/// aborts the upstream transfer, if one runs.
final class JobHandle: Sendable {
    private struct State {
        var token: TransferToken?
        var cancelled = false
        var drained = false
        var fenced = false
    }

    private let state = Mutex(State())
    let engine: HTTPEngine
    /// The lease epoch the job was taken under.
    let epoch: UInt64

    init(engine: HTTPEngine, epoch: UInt64) {
        self.engine = engine
        self.epoch = epoch
    }

    var isCancelled: Bool { state.withLock { $0.cancelled } }
    var isDrained: Bool { state.withLock { $0.drained } }
    var isFenced: Bool { state.withLock { $0.fenced } }

    /// Registers the transfer about to run; returns false when the job was interrupted meanwhile.
    func begin(_ token: TransferToken) -> Bool {
        state.withLock { s in
            s.token = token
            return !(s.cancelled || s.drained || s.fenced)
        }
    }

    func end() { state.withLock { $0.token = nil } }

    func cancel() { interrupt(.cancelled) { $0.cancelled = true } }
    func drain() { interrupt(.drain) { $0.drained = true } }
    func fence() { interrupt(.drain) { $0.fenced = true } }

    private func interrupt(_ reason: HTTPResult.Abort, _ mark: (inout State) -> Void) {
        let token = state.withLock { s -> TransferToken? in
            let already = s.cancelled || s.drained || s.fenced
            mark(&s)
            return already ? nil : s.token
        }
        if let token { engine.abort(token, reason: reason) }
    }
}
