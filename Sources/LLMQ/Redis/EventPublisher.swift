import Foundation
import Logging

/// Writes events and acknowledgements to Redis on a connection and thread of
/// its own, pipelined: whatever accumulates while one batch is in flight goes
/// out together in the next, in order.
///
/// Thread rules: `submit` and `send` may be called from any thread; the
/// state they share with the writer thread is guarded by `condition`.
public final class EventPublisher: OutputSink, @unchecked Sendable {  // all mutable state is guarded by `condition`
    private let condition = NSCondition()
    private var buffer: [UInt8] = []
    private var commands = 0
    private var waiters: [(afterCommands: Int, continuation: CheckedContinuation<Void, Never>)] = []
    private var stopping = false
    private let url: RedisURL
    private let logger: Logger
    private let onReconnect: @Sendable () -> Void

    public init(url: RedisURL, logger: Logger, onReconnect: @escaping @Sendable () -> Void = {}) {
        self.url = url
        self.logger = logger
        self.onReconnect = onReconnect
        buffer.reserveCapacity(1 << 16)
    }

    public func start() throws(LLMQError) {
        // Connecting here makes a bad URL fail at start-up; from now on only the thread uses it.
        nonisolated(unsafe) let connection = try RedisConnection(url)
        let t = Thread { [self] in self.loop(connection) }
        t.name = "llmq-publish"
        t.start()
    }

    public func submit(_ body: (inout [UInt8]) -> Int) {
        condition.lock()
        let n = body(&buffer)
        commands += n
        if n > 0 { condition.signal() }
        condition.unlock()
    }

    /// Submits commands and returns once Redis has answered all of them.
    public func send(_ body: (inout [UInt8]) -> Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in enqueue(body, waiter: c) }
    }

    private func enqueue(_ body: (inout [UInt8]) -> Int, waiter: CheckedContinuation<Void, Never>) {
        condition.lock()
        commands += body(&buffer)
        waiters.append((commands, waiter))
        condition.signal()
        condition.unlock()
    }

    /// Sends what is queued, then stops the thread.
    public func shutdown() async {
        await send { _ in 0 }
        stop()
    }

    private func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    /// Errors that mean "not now" rather than "never": the batch is sent again.
    static func isTransient(_ e: String) -> Bool {
        ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"].contains { e.hasPrefix($0) }
    }

    private func loop(_ initial: RedisConnection) {
        var connection: RedisConnection? = initial
        var out: [UInt8] = []
        out.reserveCapacity(1 << 16)
        var sentCommands = 0
        while true {
            condition.lock()
            while buffer.isEmpty && waiters.isEmpty && !stopping { condition.wait() }
            if buffer.isEmpty && waiters.isEmpty && stopping {
                condition.unlock()
                return
            }
            swap(&out, &buffer)
            let n = commands - sentCommands
            let total = commands
            condition.unlock()

            var delivered = false
            var backoff = 0.05
            while !delivered {
                do throws(LLMQError) {
                    if connection == nil {
                        connection = try RedisConnection(url)
                        logger.warning("reconnected to Redis", metadata: ["redis": "\(url)"])
                        FarmMetrics.redisReconnect(component: "publish")
                        onReconnect()
                    }
                    try out.withUnsafeBufferPointer { b throws(LLMQError) in try connection!.appendEncoded(b) }
                    var transient: String?
                    for _ in 0..<n {
                        if let e = try connection!.skipReply() {
                            if Self.isTransient(e) { transient = e } else { logger.error("Redis refused a command", metadata: ["error": "\(e)"]) }
                        }
                    }
                    // A Redis that is still loading its data refuses the whole batch; send it again once it serves.
                    if let transient { throw LLMQError.redis(transient) }
                    delivered = true
                } catch {
                    // Commands of this batch may have been applied already; a resend can repeat some lines,
                    // which subscribers detect by seq, but never loses a terminal event.
                    logger.error("Redis write failed, retrying", metadata: ["error": "\(error.message)", "backoff_s": "\(backoff)"])
                    connection = nil
                    Thread.sleep(forTimeInterval: backoff)
                    backoff = min(backoff * 2, 2)
                }
            }
            out.removeAll(keepingCapacity: true)
            sentCommands = total

            condition.lock()
            var ready: [CheckedContinuation<Void, Never>] = []
            waiters.removeAll { w in
                if w.afterCommands <= total { ready.append(w.continuation); return true }
                return false
            }
            condition.unlock()
            for c in ready { c.resume() }
        }
    }
}
