import Synchronization

/// The tasks of the jobs a worker runs. Each starts straight from the fetcher's
/// thread, one scheduling hop from Redis' reply to the job's first step, and the
/// worker waits for all of them once its fetchers have stopped.
final class JobTasks: Sendable {
    private struct State {
        var running = 0
        var closed = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func start(_ body: @escaping @Sendable () async -> Void) {
        state.withLock { $0.running += 1 }
        Task {
            await body()
            self.settle { $0.running -= 1 }
        }
    }

    /// No job starts after this (the fetchers have stopped).
    func close() { settle { $0.closed = true } }

    /// Returns once `close` was called and every job started before it has ended.
    func allEnded() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.closed && s.running == 0 { return true }
                s.waiter = c
                return false
            }
            if done { c.resume() }
        }
    }

    private func settle(_ change: (inout State) -> Void) {
        let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
            change(&s)
            guard s.closed && s.running == 0 else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        c?.resume()
    }
}
