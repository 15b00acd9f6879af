import Foundation
import LLMQ
import Logging
import Synchronization

/// Every request channel of one gateway process on one Redis connection: SUBSCRIBE and
/// UNSUBSCRIBE are multiplexed onto it as requests come and go, and each message is handed
/// to the streams of its channel. `subscribe` returns once Redis confirmed the subscription,
/// so a job pushed afterwards loses no line (PROTOCOL.md: subscribe before push).
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

    private struct Channel {
        var subscribers: [UInt64: Subscription] = [:]
        var confirmed = false
        var waiters: [CheckedContinuation<Void, any Error>] = []
    }

    private struct State {
        var channels: [String: Channel] = [:]
        /// Channels whose SUBSCRIBE (true) or UNSUBSCRIBE (false) the thread has yet to send.
        var outbox: [(String, Bool)] = []
        var nextToken: UInt64 = 0
        var stopped = false
        var connected = false
    }

    private let state = Mutex(State())
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

    /// Subscribes to `channel` and returns once Redis confirmed it.
    public func subscribe(_ channel: String) async throws -> Subscription {
        let sub: Subscription = state.withLock { s in
            s.nextToken += 1
            let sub = Subscription(channel: channel, token: s.nextToken)
            if s.channels[channel] == nil {
                s.channels[channel] = Channel()
                s.outbox.append((channel, true))
            }
            s.channels[channel]!.subscribers[sub.token] = sub
            return sub
        }
        wake()
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let ready: Bool? = state.withLock { s in
                guard !s.stopped else { return nil }
                if s.channels[channel]?.confirmed == true { return true }
                s.channels[channel]?.waiters.append(c)
                return false
            }
            switch ready {
            case true?: c.resume()
            case nil: c.resume(throwing: LLMQError.redis("the gateway is shutting down"))
            case false?: break
            }
        }
        return sub
    }

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
        let waiters: [CheckedContinuation<Void, any Error>] = state.withLock { s in
            s.stopped = true
            let w = s.channels.values.flatMap(\.waiters)
            for k in s.channels.keys { s.channels[k]!.waiters = [] }
            return w
        }
        for w in waiters { w.resume(throwing: LLMQError.redis("the gateway is shutting down")) }
        wake()
    }

    private func loop() {
        var connection: RedisConnection?
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
                try step(connection!)
            } catch {
                logger.error("subscriber connection to Redis lost: \(error.message); reconnecting")
                connection = nil
                failures = 1
                // Lines published while the connection was down are gone: end every stream now, so
                // its request answers at once (the job may still finish: its result stays readable).
                let (subs, waiters) = state.withLock { s in
                    s.connected = false
                    let subs = s.channels.values.flatMap { $0.subscribers.values }
                    let waiters = s.channels.values.flatMap(\.waiters)
                    s.channels = [:]
                    s.outbox = []
                    return (subs, waiters)
                }
                for sub in subs { sub.continuation.finish() }
                for w in waiters { w.resume(throwing: error) }
            }
        }
        let subs: [Subscription] = state.withLock { s in s.channels.values.flatMap { $0.subscribers.values } }
        for sub in subs { sub.continuation.finish() }
    }

    private func step(_ c: RedisConnection) throws(LLMQError) {
        // Replies already read must be handled first: hiredis only flushes its output in
        // redisGetReply when nothing is buffered.
        while let r = try c.bufferedReply() { handle(r) }
        let out: [(String, Bool)] = state.withLock { s in
            defer { s.outbox = [] }
            return s.outbox
        }
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
            let waiters: [CheckedContinuation<Void, any Error>] = state.withLock { s in
                guard s.channels[channel] != nil else { return [] }
                s.channels[channel]!.confirmed = true
                defer { s.channels[channel]!.waiters = [] }
                return s.channels[channel]!.waiters
            }
            for w in waiters { w.resume() }
        default:
            break
        }
    }
}
