import CCurl
import CCurlShim
import Foundation
import Synchronization

/// One thread of the HTTP engine: drives its share of a worker's upstream transfers with its own
/// libcurl multi handle. Response bytes are decoded on that thread as they arrive, and the output
/// they produce is handed to the sink in one batch per round, so many requests share each Redis
/// round trip.
///
/// Thread rules: `perform` and `abort` may be called from anywhere; all curl
/// work happens on the lane's own thread.
final class EngineLane: Sendable {
    private struct Inbox {
        var submitted = Handoff<Transfer>()
        var aborts: [(TransferToken, HTTPResult.Abort)] = []
        var stopping = false
    }

    private let inbox = Mutex(Inbox())
    private let multi: CurlMulti
    private let poller = SocketPoller()
    private let sink: OutputSink?
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let stopped = Mutex(false)

    private let name: String

    init(sink: OutputSink?, connections: Int, name: String) {
        multi = CurlMulti(connections: max(64, connections))
        self.sink = sink
        self.name = name
    }

    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = name
        t.start()
    }

    /// Stops the thread once no transfer is running any more.
    func shutdown() async {
        inbox.withLock { $0.stopping = true }
        poller.wake()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let already = stopped.withLock { s -> Bool in
                if !s { finished.withLock { $0 = c } }
                return s
            }
            if already { c.resume() }
        }
    }

    func perform(_ request: HTTPRequest, decoder: StreamDecoder, output: PendingOutput?, token: TransferToken,
                 admitted: (@Sendable (UInt64) -> Void)?) async -> HTTPResult {
        let transfer = Transfer(request: request, decoder: decoder, output: output, token: token)
        transfer.admitted = admitted
        return await withCheckedContinuation { c in
            transfer.continuation = c
            let first = inbox.withLock { $0.submitted.append(transfer) }
            if first { poller.wake() }
        }
    }

    func abort(_ token: TransferToken, reason: HTTPResult.Abort) {
        token.abortReason.withLock { if $0 == nil { $0 = reason } }
        inbox.withLock { $0.aborts.append((token, reason)) }
        poller.wake()
    }

    // MARK: the lane's thread

    private func loop() {
        let state = EngineLoop(poller: poller)
        multi.drive(with: state)
        var active: [ObjectIdentifier: Transfer] = [:]
        var spare: [CurlEasy] = []
        var running: Int32 = 0
        var lastIdleCheck: UInt64 = 0
        let fds = UnsafeMutablePointer<Int32>.allocate(capacity: SocketPoller.batch)
        let states = UnsafeMutablePointer<UInt32>.allocate(capacity: SocketPoller.batch)
        defer {
            fds.deallocate()
            states.deallocate()
        }
        var completed: [Transfer] = []
        var drained: [Transfer] = []  // the inbox's submissions of this round
        // Submitted transfers not yet handed to libcurl, oldest first from `backlogHead`.
        var backlog: [Transfer] = []
        var backlogHead = 0
        while true {
            let (aborts, stopping) = inbox.withLock { box in
                box.submitted.take(into: &drained)
                defer { box.aborts.removeAll() }
                return (box.aborts, box.stopping)
            }
            backlog.append(contentsOf: drained)
            drained.removeAll(keepingCapacity: true)
            // A burst of new transfers is admitted a few per round: each starts a connection, and a round
            // that started thousands kept every open stream's tokens waiting for as long (seconds at 10,000).
            let end = min(backlog.count, backlogHead + Self.admittedPerRound)
            let admitting = end > backlogHead
            for i in backlogHead..<end {
                let t = backlog[i]
                if let reason = t.token.abortReason.withLock({ $0 }) {
                    t.result.aborted = reason
                    completed.append(t)
                    continue
                }
                let e = spare.popLast() ?? CurlEasy()
                t.configure(e, loop: state)
                state.admit(t, on: e)
                active[ObjectIdentifier(t.token)] = t
                // Lines written before the call (its start event) go out with this round.
                t.markOutput()
                curl_multi_add_handle(multi.handle, e.handle)
                t.admitted?(Clock.nowNanos())
            }
            backlogHead = end
            if backlogHead == backlog.count {
                backlog.removeAll(keepingCapacity: true)
                backlogHead = 0
            } else if backlogHead >= 1024 {
                backlog.removeFirst(backlogHead)  // admitted transfers are not kept alive by a long burst
                backlogHead = 0
            }
            for (token, reason) in aborts {
                guard let t = active.removeValue(forKey: ObjectIdentifier(token)) else { continue }
                t.result.aborted = reason
                completed.append(t)
            }
            if stopping && active.isEmpty && completed.isEmpty && backlog.isEmpty { break }

            let now = Clock.nowNanos()
            var timeout: Int32 = 100
            if !completed.isEmpty || admitting || !backlog.isEmpty || !state.dirty.isEmpty {
                timeout = 0
            } else if let due = state.timerDue {
                timeout = due <= now ? 0 : Int32(min(100, (due - now + 999_999) / 1_000_000))
            }
            _ = poller.wait(timeoutMs: timeout, fds: fds, states: states) { fd, ready in
                curl_multi_socket_action(multi.handle, fd, ready.rawValue, &running)
            }
            if let due = state.timerDue, due <= Clock.nowNanos() {
                state.timerDue = nil
                curl_multi_socket_action(multi.handle, CURL_SOCKET_TIMEOUT, 0, &running)
            }
            var left: Int32 = 0
            while let msg = curl_multi_info_read(multi.handle, &left) {
                guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle else { continue }
                var priv: UnsafeMutableRawPointer?
                _ = llmq_easy_getinfo_ptr(easy, CURLINFO_PRIVATE, &priv)
                guard let priv else { continue }
                let t = Unmanaged<Transfer>.fromOpaque(priv).takeUnretainedValue()
                guard active.removeValue(forKey: ObjectIdentifier(t.token)) != nil else { continue }
                t.complete(code: msg.pointee.data.result)
                completed.append(t)
            }

            let after = Clock.nowNanos()
            if after &- lastIdleCheck > 50_000_000 {
                lastIdleCheck = after
                for (key, t) in active {
                    guard let idle = t.request.idleTimeout, Double(after &- t.lastDataAt) / 1e9 > idle else { continue }
                    active.removeValue(forKey: key)
                    t.result.aborted = .idleTimeout
                    completed.append(t)
                }
            }

            flush(state, completed)
            for t in completed {
                if let e = t.easy {
                    curl_multi_remove_handle(multi.handle, e.handle)
                    state.leave(t)
                    e.reset()
                    if spare.count < 256 { spare.append(e) }
                    t.easy = nil
                }
                let c = t.continuation
                t.continuation = nil
                c?.resume(returning: t.result)
            }
            completed.removeAll(keepingCapacity: true)
        }
        stopped.withLock { $0 = true }
        let c = finished.withLock { c -> CheckedContinuation<Void, Never>? in
            defer { c = nil }
            return c
        }
        c?.resume()
    }

    /// New transfers handed to libcurl per round of the engine's loop.
    static let admittedPerRound = 32

    /// Hands the output of this round to the sink in one batch: transfers that produced
    /// lines (marked as they did), then those that ended.
    private func flush(_ state: EngineLoop, _ completed: [Transfer]) {
        defer {
            for t in state.dirty { t.outputMarked = false }
            state.dirty.removeAll(keepingCapacity: true)
        }
        guard let sink else { return }
        var any = !state.dirty.isEmpty
        if !any { for t in completed where t.output?.hasPending == true { any = true; break } }
        guard any else { return }
        sink.submit { buffer in
            var n = 0
            for t in state.dirty { if let o = t.output, o.hasPending { n += o.drain(into: &buffer) } }
            for t in completed { if let o = t.output, o.hasPending { n += o.drain(into: &buffer) } }
            return n
        }
    }
}

/// The engine thread's state that libcurl's socket and timer callbacks update.
///
/// Thread rules: used only on the engine thread (the callbacks run inside `curl_multi_socket_action`
/// and `curl_multi_add_handle` there).
final class EngineLoop {
    let poller: SocketPoller
    /// When libcurl wants `curl_multi_socket_action` called with a timeout, in `Clock` nanoseconds.
    var timerDue: UInt64?
    /// Transfers whose output grew this round.
    var dirty: [Transfer] = []
    /// Cleartext upstreams by `http://host:port`.
    var origins: [String: UpstreamOrigin] = [:]

    init(poller: SocketPoller) {
        self.poller = poller
    }
}

let engineSocketCallback: llmq_socket_cb = { _, fd, what, userp, _ in
    guard let userp else { return 0 }
    let loop = Unmanaged<EngineLoop>.fromOpaque(userp).takeUnretainedValue()
    loop.poller.watch(fd, what == CURL_POLL_REMOVE ? [] : SocketPoller.Readiness(rawValue: what & 3))
    return 0
}

let engineTimerCallback: llmq_timer_cb = { _, ms, userp in
    guard let userp else { return 0 }
    let loop = Unmanaged<EngineLoop>.fromOpaque(userp).takeUnretainedValue()
    loop.timerDue = ms < 0 ? nil : Clock.nowNanos() &+ UInt64(ms) &* 1_000_000
    return 0
}
