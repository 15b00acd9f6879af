import CCurlShim
import Foundation

/// Owns the epoll descriptor the HTTP engine waits on and the eventfd that wakes it.
///
/// libcurl's socket interface tells the engine which sockets to watch, so a round costs
/// what its ready sockets cost, not what every running transfer costs (as
/// `curl_multi_perform` and `curl_multi_poll` do).
///
/// Thread rules: only the engine thread watches and waits; `wake` may be called from any thread.
final class SocketPoller: Sendable {
    struct Readiness: OptionSet {
        let rawValue: Int32
        static let readable = Readiness(rawValue: 1)
        static let writable = Readiness(rawValue: 2)
        static let failed = Readiness(rawValue: 4)
    }

    private let epoll: Int32
    let wakeDescriptor: Int32
    static let batch = 256

    init() {
        epoll = llmq_epoll_create()
        wakeDescriptor = llmq_eventfd()
        guard epoll >= 0, wakeDescriptor >= 0, llmq_epoll_watch(epoll, wakeDescriptor, Readiness.readable.rawValue) == 0 else {
            fatalError("cannot create the HTTP engine's epoll or eventfd (errno \(errno)): raise the open-files limit")
        }
    }

    deinit {
        close(epoll)
        close(wakeDescriptor)
    }

    func wake() { llmq_eventfd_signal(wakeDescriptor) }

    /// Watches `fd` for `interest`; an empty interest stops watching it.
    func watch(_ fd: Int32, _ interest: Readiness) {
        _ = llmq_epoll_watch(epoll, fd, interest.rawValue)
    }

    /// Waits up to `timeoutMs` (0: do not wait) and calls `ready` for each socket that is ready.
    /// Returns whether the engine was woken.
    func wait(timeoutMs: Int32, fds: UnsafeMutablePointer<Int32>, states: UnsafeMutablePointer<UInt32>,
              _ ready: (Int32, Readiness) -> Void) -> Bool {
        let n = llmq_epoll_wait(epoll, fds, states, Int32(Self.batch), timeoutMs)
        var woken = false
        for i in 0..<Int(max(n, 0)) {
            if fds[i] == wakeDescriptor {
                llmq_eventfd_drain(wakeDescriptor)
                woken = true
            } else {
                ready(fds[i], Readiness(rawValue: Int32(states[i])))
            }
        }
        return woken
    }
}
