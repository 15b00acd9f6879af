import Foundation
import Logging

/// Writes events and job moves to Redis on a connection and thread of its
/// own, pipelined: whatever accumulates while one batch is in flight goes out
/// together in the next, in order.
///
/// On a Redis Cluster the connection splits each batch by master and writes
/// every master's part before reading any reply (see `ClusterRouter`): one
/// pipeline per master, in flight at once, from this one thread.
///
/// Errors: a batch that Redis refuses as "not now" (LOADING, BUSY, TRYAGAIN,
/// MASTERDOWN, CLUSTERDOWN, NOREPLICAS) or that meets a replica (READONLY, a failover
/// behind one address) is sent again on a new connection. Other refusals (OOM,
/// NOPERM, a script error) are reported to the `send` that submitted the
/// command, so a caller can hold back what must follow it (a job is never
/// acknowledged when its terminal write failed).
///
/// Fencing: with a lease, a batch is written only while the lease still holds
/// the epoch under which its first command was submitted; after a lapse it is
/// dropped, never sent late.
///
/// Thread rules: `submit`, `send` and `discardPending` may be called from any
/// thread; the state they share with the writer thread is guarded by `condition`.
public final class EventPublisher: OutputSink, @unchecked Sendable {  // all mutable state is guarded by `condition`
    private struct Waiter {
        var first: Int
        var end: Int
        var continuation: CheckedContinuation<Bool, Never>
    }

    private let condition = NSCondition()
    private var buffer: [UInt8] = []
    private var commands = 0
    /// Commands the writer thread has finished with (sent, refused or dropped).
    private var sentCommands = 0
    private var waiters: [Waiter] = []
    private var stopping = false
    /// Set by `abandon`: nothing more is sent, and every `send` answers false.
    private var abandoned = false
    private var bufferEpoch: UInt64 = 0
    /// Queued WAIT commands (see `send(_:replicas:timeoutMs:)`) by command number, with the replicas each needs.
    private var replicaWaits: [Int: Int] = [:]
    private let url: RedisURL
    private let lease: Lease?
    private let logger: Logger
    private let onReconnect: @Sendable () -> Void

    public init(url: RedisURL, lease: Lease? = nil, logger: Logger, onReconnect: @escaping @Sendable () -> Void = {}) {
        self.url = url
        self.lease = lease
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
        let wasEmpty = buffer.isEmpty
        let n = body(&buffer)
        if wasEmpty && n > 0 { bufferEpoch = lease?.epoch ?? 0 }
        commands += n
        if n > 0 { condition.signal() }
        condition.unlock()
    }

    /// Submits commands and returns once Redis has answered all of them:
    /// true when it accepted every one, false when it refused one or the batch was fenced off.
    @discardableResult
    public func send(_ body: (inout [UInt8]) -> Int) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in enqueue(body, waiter: c) }
    }

    /// As `send`, followed on the same connection by `WAIT replicas timeoutMs`: true only when Redis
    /// accepted every command and at least `replicas` replicas confirmed them (and all this connection
    /// wrote before). A batch sent again after a lost connection repeats the WAIT on the new one.
    public func send(_ body: (inout [UInt8]) -> Int, replicas: Int, timeoutMs: Int) async -> Bool {
        await send { buf in
            let n = body(&buf)
            RESP.appendCommand(["WAIT", String(replicas), String(timeoutMs)], to: &buf)
            replicaWaits[commands + n] = replicas  // `enqueue` holds the lock and counts these after `body`
            return n + 1
        }
    }

    private func enqueue(_ body: (inout [UInt8]) -> Int, waiter: CheckedContinuation<Bool, Never>) {
        condition.lock()
        if abandoned {
            condition.unlock()
            waiter.resume(returning: false)
            return
        }
        let first = commands
        let wasEmpty = buffer.isEmpty
        let n = body(&buffer)
        if wasEmpty && n > 0 { bufferEpoch = lease?.epoch ?? 0 }
        commands += n
        waiters.append(Waiter(first: first, end: commands, continuation: waiter))
        condition.signal()
        condition.unlock()
    }

    /// Drops what is queued and not yet sent: the lease it was written under is gone.
    public func discardPending() {
        condition.lock()
        bufferEpoch = 0
        condition.unlock()
    }

    /// Whether `abandon` was called.
    public var isAbandoned: Bool {
        condition.lock()
        defer { condition.unlock() }
        return abandoned
    }

    /// Gives up on Redis for good (a worker that must exit while Redis is unreachable): what is queued or
    /// being retried is dropped and reported as refused, and every later `send` answers false at once.
    /// Jobs whose writes are dropped stay in their in-flight lists for the reaper.
    public func abandon() {
        condition.lock()
        let wasAbandoned = abandoned
        abandoned = true
        let dropped = commands - sentCommands
        condition.broadcast()
        condition.unlock()
        if !wasAbandoned {
            logger.error("gave up on Redis: unsent writes are dropped and their jobs stay in flight for the reaper", metadata: [
                "commands": "\(dropped)",
            ])
        }
    }

    /// Sends what is queued, then stops the thread; gives up (see `abandon`) when that takes longer than `seconds`.
    public func shutdown(within seconds: Double = 30) async {
        let deadline = Task {
            try? await Task.sleep(for: .seconds(seconds))
            if !Task.isCancelled { self.abandon() }
        }
        await send { _ in 0 }
        deadline.cancel()
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
        ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "NOREPLICAS"].contains { e.hasPrefix($0) }
    }

    /// Errors that mean "not this server": reconnect (the address may lead to the new master) and send again.
    static func needsReconnect(_ e: String) -> Bool { e.hasPrefix("READONLY") }

    private func loop(_ initial: RedisConnection) {
        var connection: RedisConnection? = initial
        var out: [UInt8] = []
        out.reserveCapacity(1 << 16)
        var droppedLogged = false
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
            let first = sentCommands
            let epoch = bufferEpoch
            let waits = replicaWaits
            replicaWaits.removeAll()
            let giveUp = abandoned
            condition.unlock()

            var refused: [Int] = []
            if giveUp {
                refused = Array(first..<total)
            } else if let lease, n > 0, !lease.holds(epoch) {
                refused = Array(first..<total)
                if !droppedLogged {
                    logger.warning("dropped writes made under a lapsed lease", metadata: ["commands": "\(n)"])
                    droppedLogged = true
                }
            } else if n > 0 {
                droppedLogged = false
                refused = deliver(out, count: n, first: first, waits: waits, connection: &connection)
            }
            out.removeAll(keepingCapacity: true)

            condition.lock()
            sentCommands = total
            var ready: [(CheckedContinuation<Bool, Never>, Bool)] = []
            waiters.removeAll { w in
                guard w.end <= total else { return false }
                let ok = !refused.contains { $0 >= w.first && $0 < w.end }
                ready.append((w.continuation, ok))
                return true
            }
            condition.unlock()
            for (c, ok) in ready { c.resume(returning: ok) }
        }
    }

    /// Writes one batch until Redis took it; returns the numbers of the commands it refused for good.
    private func deliver(_ out: [UInt8], count n: Int, first: Int, waits: [Int: Int], connection: inout RedisConnection?) -> [Int] {
        var backoff = 0.05
        while true {
            if isAbandoned { return Array(first..<(first + n)) }
            do throws(LLMQError) {
                if connection == nil {
                    connection = try RedisConnection(url)
                    logger.warning("reconnected to Redis", metadata: ["redis": "\(url)"])
                    FarmMetrics.redisReconnect(component: "publish")
                    onReconnect()
                }
                try out.withUnsafeBufferPointer { b throws(LLMQError) in try connection!.appendEncoded(b) }
                var again: String?
                var refused: [Int] = []
                for i in 0..<n {
                    if let need = waits[first + i] {
                        switch try connection!.reply() {
                        case .integer(let got) where got >= need: break
                        // A demoted master refuses WAIT: the batch goes again to wherever the master is now.
                        case .error(let e) where !e.hasPrefix("NOPERM"): again = again ?? e
                        case let r:
                            refused.append(first + i)
                            logger.warning("too few replicas confirmed a write in time", metadata: ["reply": "\(r)", "needed": "\(need)"])
                        }
                        continue
                    }
                    guard let e = try connection!.skipReply() else { continue }
                    if Self.isTransient(e) || Self.needsReconnect(e) {
                        again = again ?? e
                    } else {
                        refused.append(first + i)
                        logger.error("Redis refused a command", metadata: ["error": "\(e)"])
                    }
                }
                // A Redis that is still loading, or a replica, refuses the whole batch; send it again once it serves.
                if let again {
                    if Self.needsReconnect(again) { connection = nil }
                    throw LLMQError.redis(again)
                }
                return refused
            } catch {
                // Commands of this batch may have been applied already; a resend can repeat some lines,
                // which subscribers detect by seq, but never loses a terminal event.
                logger.error("Redis write failed, retrying", metadata: ["error": "\(error.message)", "backoff_s": "\(backoff)"])
                connection = nil
                let until = Date(timeIntervalSinceNow: backoff)
                condition.lock()
                while !abandoned && Date() < until { _ = condition.wait(until: until) }
                condition.unlock()
                backoff = min(backoff * 2, 2)
            }
        }
    }
}
