import CCurl
import CCurlShim
import Foundation
import Logging
import Synchronization

/// Drives every upstream transfer of a worker process from one thread with
/// libcurl's multi interface. Response bytes are decoded on that thread as
/// they arrive, and the output they produce is handed to the sink in one batch
/// per round, so many requests share each Redis round trip.
///
/// Thread rules: `perform` and `abort` may be called from anywhere; all curl
/// work happens on the engine's own thread.
public final class HTTPEngine: Sendable {
    private struct Inbox {
        var submitted: [Transfer] = []
        var aborts: [(TransferToken, HTTPResult.Abort)] = []
        var stopping = false
    }

    private let inbox = Mutex(Inbox())
    private let multi = CurlMulti()
    private let sink: OutputSink?
    private let logger: Logger
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let stopped = Mutex(false)

    public init(sink: OutputSink?, logger: Logger) {
        self.sink = sink
        self.logger = logger
    }

    public func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "llmq-http"
        t.start()
    }

    /// Stops the thread once no transfer is running any more.
    public func shutdown() async {
        inbox.withLock { $0.stopping = true }
        multi.wakeup()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let already = stopped.withLock { s -> Bool in
                if !s { finished.withLock { $0 = c } }
                return s
            }
            if already { c.resume() }
        }
    }

    /// Runs one request; `decoder` sees the body of a 2xx answer as it arrives.
    public func perform(_ request: HTTPRequest, decoder: StreamDecoder, output: PendingOutput?, token: TransferToken = TransferToken()) async -> HTTPResult {
        let transfer = Transfer(request: request, decoder: decoder, output: output, token: token)
        return await withCheckedContinuation { c in
            transfer.continuation = c
            inbox.withLock { $0.submitted.append(transfer) }
            multi.wakeup()
        }
    }

    /// Cuts a running transfer; its `perform` returns with `aborted` set.
    public func abort(_ token: TransferToken, reason: HTTPResult.Abort) {
        token.abortReason.withLock { if $0 == nil { $0 = reason } }
        inbox.withLock { $0.aborts.append((token, reason)) }
        multi.wakeup()
    }

    // MARK: engine thread

    private func loop() {
        var active: [ObjectIdentifier: Transfer] = [:]
        var spare: [CurlEasy] = []
        var running: Int32 = 0
        var lastIdleCheck: UInt64 = 0
        while true {
            let (submitted, aborts, stopping) = inbox.withLock { box in
                defer { box.submitted.removeAll(); box.aborts.removeAll() }
                return (box.submitted, box.aborts, box.stopping)
            }
            var completed: [Transfer] = []
            for t in submitted {
                if let reason = t.token.abortReason.withLock({ $0 }) {
                    t.result.aborted = reason
                    completed.append(t)
                    continue
                }
                let e = spare.popLast() ?? CurlEasy()
                t.configure(e)
                active[ObjectIdentifier(t.token)] = t
                curl_multi_add_handle(multi.handle, e.handle)
            }
            for (token, reason) in aborts {
                guard let t = active.removeValue(forKey: ObjectIdentifier(token)) else { continue }
                t.result.aborted = reason
                completed.append(t)
            }
            if stopping && active.isEmpty && completed.isEmpty { break }

            curl_multi_perform(multi.handle, &running)
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

            let now = Clock.nowNanos()
            if now &- lastIdleCheck > 50_000_000 {
                lastIdleCheck = now
                for (key, t) in active {
                    guard let idle = t.request.idleTimeout, Double(now &- t.lastDataAt) / 1e9 > idle else { continue }
                    active.removeValue(forKey: key)
                    t.result.aborted = .idleTimeout
                    completed.append(t)
                }
            }

            flush(active.values, completed)
            for t in completed {
                if let e = t.easy {
                    curl_multi_remove_handle(multi.handle, e.handle)
                    e.reset()
                    if spare.count < 256 { spare.append(e) }
                    t.easy = nil
                }
                let c = t.continuation
                t.continuation = nil
                c?.resume(returning: t.result)
            }
            if !completed.isEmpty || !submitted.isEmpty { continue }
            var numfds: Int32 = 0
            curl_multi_poll(multi.handle, nil, 0, 100, &numfds)
        }
        stopped.withLock { $0 = true }
        let c = finished.withLock { c -> CheckedContinuation<Void, Never>? in
            defer { c = nil }
            return c
        }
        c?.resume()
    }

    private func flush(_ active: Dictionary<ObjectIdentifier, Transfer>.Values, _ completed: [Transfer]) {
        guard let sink else { return }
        var any = false
        for t in active where t.output?.hasPending == true { any = true; break }
        if !any { for t in completed where t.output?.hasPending == true { any = true; break } }
        guard any else { return }
        sink.submit { buffer in
            var n = 0
            for t in active { if let o = t.output, o.hasPending { n += o.drain(into: &buffer) } }
            for t in completed { if let o = t.output, o.hasPending { n += o.drain(into: &buffer) } }
            return n
        }
    }
}
