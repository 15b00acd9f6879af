import Synchronization

/// What the rest of the worker can do to one running job: cancel it or cut
/// it short for a drain. Both abort the upstream transfer, if one runs.
final class JobHandle: Sendable {
    private struct State {
        var token: TransferToken?
        var cancelled = false
        var drained = false
    }

    private let state = Mutex(State())
    let engine: HTTPEngine

    init(engine: HTTPEngine) { self.engine = engine }

    var isCancelled: Bool { state.withLock { $0.cancelled } }
    var isDrained: Bool { state.withLock { $0.drained } }
    var isInterrupted: Bool { state.withLock { $0.cancelled || $0.drained } }

    /// Registers the transfer about to run; returns false when the job was interrupted meanwhile.
    func begin(_ token: TransferToken) -> Bool {
        state.withLock { s in
            s.token = token
            return !(s.cancelled || s.drained)
        }
    }

    func end() { state.withLock { $0.token = nil } }

    func cancel() {
        let token = state.withLock { s -> TransferToken? in
            s.cancelled = true
            return s.token
        }
        if let token { engine.abort(token, reason: .cancelled) }
    }

    func drain() {
        let token = state.withLock { s -> TransferToken? in
            s.drained = true
            return s.cancelled ? nil : s.token
        }
        if let token { engine.abort(token, reason: .drain) }
    }

    /// Waits up to `seconds`, returning early once the job is interrupted.
    func pause(_ seconds: Double) async {
        let end = Clock.nowNanos() + UInt64(max(0, seconds) * 1e9)
        while !isInterrupted {
            let now = Clock.nowNanos()
            guard now < end else { return }
            try? await Task.sleep(for: .nanoseconds(Int(min(end - now, 20_000_000))))
        }
    }
}
