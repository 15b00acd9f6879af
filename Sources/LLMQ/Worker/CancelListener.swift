import Foundation
import Logging
import Synchronization

/// Listens on `PREFIX:cancel` for request ids and hands each to `onCancel`, on a
/// thread and connection of its own; reconnects with backoff.
public final class CancelListener: Sendable {
    let channel: String
    let url: RedisURL
    let logger: Logger
    let onCancel: @Sendable (String) -> Void
    private let stopping = Atomic<Bool>(false)

    public init(keys: Keys, url: RedisURL, logger: Logger, onCancel: @escaping @Sendable (String) -> Void) {
        channel = keys.cancelChannel
        self.url = url
        self.logger = logger
        self.onCancel = onCancel
    }

    /// Listens until the task is cancelled (a drain still takes cancellations).
    public func run() async {
        await runOnThread(named: "llmq-cancel", untilShutdown: false, loop: { self.loop() }, stop: { self.stop() })
    }

    public func stop() { stopping.store(true, ordering: .relaxed) }

    private func loop() {
        var backoff = 0.05
        while !stopping.load(ordering: .relaxed) {
            do throws(LLMQError) {
                let c = try RedisConnection(url)
                let r = try c.command(["SUBSCRIBE", channel])
                guard r.array?.first?.string == "subscribe" else { throw .redis("SUBSCRIBE \(channel) failed: \(r)") }
                backoff = 0.05
                while !stopping.load(ordering: .relaxed) {
                    guard let msg = try c.waitReply(timeout: 0.25), let parts = msg.array, parts.count == 3,
                          parts[0].string == "message", let id = parts[2].string else { continue }
                    onCancel(id.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            } catch {
                logger.warning("cancel listener lost Redis, reconnecting", metadata: ["error": "\(error.message)"])
                FarmMetrics.redisReconnect(component: "cancel")
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 2)
            }
        }
    }
}
