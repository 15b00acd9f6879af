import Foundation
import LLMQ
import Logging
import Synchronization

/// Every request channel of one gateway process on one Redis connection: SUBSCRIBE and
/// UNSUBSCRIBE are multiplexed onto it as requests come and go, and each message is handed
/// to the streams of its channel. `subscribe` returns once Redis confirmed the subscription,
/// so a job pushed afterwards loses no line (PROTOCOL.md: subscribe before push). A request
/// that needs no other Redis work hands its job over with the subscription: the hub's thread
/// LPUSHes it on its own second connection the moment the SUBSCRIBE is confirmed, which saves
/// the request two thread hand-offs on its way to the queue.
///
/// Thread rules: the connection belongs to the hub's own thread, which blocks in `poll` on
/// the socket and a wake pipe; callers on any thread only touch `state`, under its mutex.
public final class SubscriptionHub: Sendable {
    /// One subscriber's view of a channel: its payloads (one or more whole NDJSON lines each).
    public final class Subscription: Sendable {
        public let channel: String
        public let payloads: AsyncStream<[UInt8]>
        let continuation: AsyncStream<[UInt8]>.Continuation
        let token: UInt64

        init(channel: String, token: UInt64) {
            self.channel = channel
            self.token = token
            (payloads, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .unbounded)
        }
    }

    /// A job to LPUSH onto `queue` once its channel is subscribed.
    public struct Push: Sendable {
        public var queue: String
        public var job: [UInt8]

        public init(queue: String, job: [UInt8]) {
            self.queue = queue
            self.job = job
        }
    }

    private struct Waiter {
        let continuation: CheckedContinuation<Void, any Error>
        let push: Push?
    }

    private struct Channel {
        var subscribers: [UInt64: Subscription] = [:]
        var confirmed = false
        var waiters: [Waiter] = []
    }

    private struct State {
        var channels: [String: Channel] = [:]
        /// Channels whose SUBSCRIBE (true) or UNSUBSCRIBE (false) the thread has yet to send.
        var outbox: [(String, Bool)] = []
        /// Subscribed requests whose job the thread has yet to push.
        var pushes: [Waiter] = []
        var stopped = false
        var connected = false
    }

    private let state = Mutex(State())
    private let nextToken = Atomic<UInt64>(0)
    private let url: RedisURL
    private let logger: Logger
    private let wakeRead: Int32
    private let wakeWrite: Int32

    public init(url: RedisURL, logger: Logger) {
        self.url = url
        self.logger = logger
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Channels subscribed right now (one per request followed, whatever the number of its viewers).
    public var channelCount: Int { state.withLock { $0.channels.count } }
    public var isConnected: Bool { state.withLock { $0.connected } }

    /// Subscribes to `channel` and returns once Redis confirmed it, and, with `push`, once the
    /// job is on its queue too (thrown errors: the subscription or the LPUSH failed; nothing is left subscribed).
    public func subscribe(_ channel: String, thenPush push: Push? = nil) async throws -> Subscription {
        let sub = Subscription(channel: channel, token: nextToken.add(1, ordering: .relaxed).newValue)
        do {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let waiter = Waiter(continuation: c, push: push)
                let next: Next = state.withLock { s in
                    guard !s.stopped else { return .stopped }
                    guard var ch = s.channels[channel] else {
                        var ch = Channel()
                        ch.subscribers[sub.token] = sub
                        ch.waiters.append(waiter)
                        s.channels[channel] = ch
                        s.outbox.append((channel, true))
                        return .wake
                    }
                    ch.subscribers[sub.token] = sub
                    var next = Next.wait
                    if !ch.confirmed {
                        ch.waiters.append(waiter)
                    } else if push != nil {
                        s.pushes.append(waiter)
                        next = .wake
                    } else {
                        next = .ready
                    }
                    s.channels[channel] = ch
                    return next
                }
                switch next {
                case .ready: c.resume()
                case .stopped: c.resume(throwing: LLMQError.redis("the gateway is shutting down"))
                case .wake: wake()
                case .wait: break
                }
            }
        } catch {
            unsubscribe(sub)
            throw error
        }
        return sub
    }

    private enum Next { case ready, wait, wake, stopped }

    /// Ends one subscriber; the channel is unsubscribed when it was the last.
    public func unsubscribe(_ sub: Subscription) {
        sub.continuation.finish()
        let send: Bool = state.withLock { s in
            guard var ch = s.channels[sub.channel] else { return false }
            ch.subscribers[sub.token] = nil
            if ch.subscribers.isEmpty && ch.waiters.isEmpty {
                s.channels[sub.channel] = nil
                s.outbox.append((sub.channel, false))
                return true
            }
            s.channels[sub.channel] = ch
            return false
        }
        if send { wake() }
    }

    private func wake() {
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    /// Runs the hub's loop on a thread until `stop`.
    public func start() {
        let t = Thread { self.loop() }
        t.name = "llmq-gateway-subscriber"
        t.start()
    }

    public func stop() {
        let waiters: [Waiter] = state.withLock { s in
            s.stopped = true
            let w = s.channels.values.flatMap(\.waiters) + s.pushes
            for k in s.channels.keys { s.channels[k]!.waiters = [] }
            s.pushes = []
            return w
        }
        for w in waiters { w.continuation.resume(throwing: LLMQError.redis("the gateway is shutting down")) }
        wake()
    }

    private func loop() {
        var connection: RedisConnection?
        var pusher: RedisConnection?
        var failures = 0
        while !state.withLock({ $0.stopped }) {
            if connection == nil {
                do throws(LLMQError) {
                    let c = try RedisConnection(url, connectTimeout: 2)
                    c.setTimeout(5)
                    connection = c
                    // A new connection has no subscriptions: send them all again.
                    state.withLock { s in
                        s.connected = true
                        s.outbox = s.channels.keys.map { ($0, true) }
                        for k in s.channels.keys { s.channels[k]!.confirmed = false }
                    }
                    if failures > 0 { logger.notice("subscriber connection to Redis restored") }
                    failures = 0
                } catch {
                    if failures == 0 { logger.error("gateway cannot subscribe: \(error.message)") }
                    failures += 1
                    state.withLock { $0.connected = false }
                    usleep(useconds_t(min(failures, 10) * 100_000))
                    continue
                }
            }
            do throws(LLMQError) {
                try step(connection!, pusher: &pusher)
            } catch {
                logger.error("subscriber connection to Redis lost: \(error.message); reconnecting")
                connection = nil
                failures = 1
                // Lines published while the connection was down are gone: end every stream now, so
                // its request answers at once (the job may still finish: its result stays readable).
                let (subs, waiters) = state.withLock { s in
                    s.connected = false
                    let subs = s.channels.values.flatMap { $0.subscribers.values }
                    let waiters = s.channels.values.flatMap(\.waiters) + s.pushes
                    s.channels = [:]
                    s.outbox = []
                    s.pushes = []
                    return (subs, waiters)
                }
                for sub in subs { sub.continuation.finish() }
                for w in waiters { w.continuation.resume(throwing: error) }
            }
        }
        let subs: [Subscription] = state.withLock { s in s.channels.values.flatMap { $0.subscribers.values } }
        for sub in subs { sub.continuation.finish() }
    }

    private func step(_ c: RedisConnection, pusher: inout RedisConnection?) throws(LLMQError) {
        // Replies already read must be handled first: hiredis only flushes its output in
        // redisGetReply when nothing is buffered.
        while let r = try c.bufferedReply() { handle(r) }
        let (out, pushes): ([(String, Bool)], [Waiter]) = state.withLock { s in
            defer { s.outbox = []; s.pushes = [] }
            return (s.outbox, s.pushes)
        }
        if !pushes.isEmpty { push(pushes, on: &pusher) }
        if !out.isEmpty {
            for (channel, on) in out { try c.append([on ? "SUBSCRIBE" : "UNSUBSCRIBE", channel]) }
            handle(try c.reply())  // flushes the commands; whatever reply comes first is handled like any other
            return
        }
        var fds = [pollfd(fd: c.fileDescriptor, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        let n = poll(&fds, 2, 1000)
        if n < 0 && errno != EINTR { throw .redis("poll on the subscriber connection failed: \(String(cString: strerror(errno)))") }
        if fds[1].revents != 0 {
            var drain = [UInt8](repeating: 0, count: 256)
            while read(wakeRead, &drain, 256) > 0 {}
        }
        if fds[0].revents != 0 {
            try c.readSocket()
        }
    }

    private func handle(_ reply: RedisReply) {
        guard case .array(let parts) = reply, parts.count >= 3, let kind = parts[0].string, let channel = parts[1].string else { return }
        switch kind {
        case "message":
            guard case .string(let payload) = parts[2] else { return }
            let subs: [Subscription] = state.withLock { s in s.channels[channel].map { Array($0.subscribers.values) } ?? [] }
            for sub in subs { sub.continuation.yield(payload) }
        case "subscribe":
            // Waiters with a job go to `pushes`, which the next step sends before it polls again.
            let waiters: [Waiter] = state.withLock { s in
                guard s.channels[channel] != nil else { return [] }
                s.channels[channel]!.confirmed = true
                defer { s.channels[channel]!.waiters = [] }
                let all = s.channels[channel]!.waiters
                s.pushes += all.filter { $0.push != nil }
                return all.filter { $0.push == nil }
            }
            for w in waiters { w.continuation.resume() }
        default:
            break
        }
    }

    /// LPUSHes the jobs of confirmed subscriptions in one pipeline and tells each waiter how it
    /// went; the push connection is opened on first use and again after a failure.
    private func push(_ waiters: [Waiter], on pusher: inout RedisConnection?) {
        var answered = 0
        do throws(LLMQError) {
            if pusher == nil {
                let p = try RedisConnection(url, connectTimeout: 2)
                p.setTimeout(5)
                pusher = p
            }
            for w in waiters { try pusher!.append([Array("LPUSH".utf8), Array(w.push!.queue.utf8), w.push!.job]) }
            for w in waiters {
                let r = try pusher!.reply()
                answered += 1
                if case .error(let e) = r {
                    w.continuation.resume(throwing: LLMQError.redis("LPUSH \(w.push!.queue) failed: \(e)"))
                } else {
                    w.continuation.resume()
                }
            }
        } catch {
            pusher = nil
            logger.error("gateway cannot push jobs: \(error.message)")
            for w in waiters[answered...] { w.continuation.resume(throwing: error) }
        }
    }
}
