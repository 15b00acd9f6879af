import Foundation
import LLMQ
import Synchronization

/// A few threads, each with its own Redis connection, that run the gateway's short commands
/// (LPUSH, GET, XREAD without BLOCK, admission counts) so the cooperative pool never blocks on a socket.
///
/// Thread rules: each connection is created and used only by its thread; callers hand work
/// over through `queue` (under its mutex) and get the result back through a continuation.
final class RedisPool: Sendable {
    typealias Item = @Sendable (RedisConnection?) -> Bool

    private let queue = Mutex<(items: [Item], head: Int, stopped: Bool)>(([], 0, false))
    private let ready = DispatchSemaphore(value: 0)
    private let url: RedisURL
    private let threads: Int

    init(url: RedisURL, threads: Int = 4) {
        self.url = url
        self.threads = threads
    }

    func start() {
        for n in 0..<threads {
            let t = Thread { self.loop() }
            t.name = "llmq-gateway-redis-\(n)"
            t.start()
        }
    }

    func stop() {
        queue.withLock { $0.stopped = true }
        for _ in 0..<threads { ready.signal() }
    }

    /// Runs `body` on a pool thread with its connection; Redis being unreachable throws `.redis`.
    func run<T: Sendable>(_ body: @escaping @Sendable (RedisConnection) throws(LLMQError) -> T) async throws(LLMQError) -> T {
        let url = self.url
        let result: Result<T, LLMQError> = await withCheckedContinuation { c in
            let item: Item = { connection in
                guard let connection else {
                    c.resume(returning: .failure(.redis("cannot reach Redis at \(url)")))
                    return false
                }
                do throws(LLMQError) {
                    c.resume(returning: .success(try body(connection)))
                    return true
                } catch {
                    c.resume(returning: .failure(error))
                    return error.code != .redis  // a broken connection is replaced
                }
            }
            let accepted = queue.withLock { q in
                guard !q.stopped else { return false }
                q.items.append(item)
                return true
            }
            if accepted { ready.signal() } else { c.resume(returning: .failure(.redis("the gateway is shutting down"))) }
        }
        return try result.get()
    }

    private func loop() {
        var connection: RedisConnection?
        while true {
            ready.wait()
            let item: Item? = queue.withLock { q in
                guard q.head < q.items.count else { return nil }
                let i = q.items[q.head]
                q.head += 1
                if q.head > 1024 && q.head * 2 > q.items.count {
                    q.items.removeFirst(q.head)
                    q.head = 0
                }
                return i
            }
            guard let item else {
                if queue.withLock({ $0.stopped }) { return }
                continue
            }
            if connection == nil {
                connection = try? RedisConnection(url, connectTimeout: 2)
                connection?.setTimeout(5)
            }
            if !item(connection) { connection = nil }
        }
    }
}
