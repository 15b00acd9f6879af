import Foundation
import Logging
import Synchronization

/// Moves due jobs from each key family's delayed set back to the head of its queue
/// (`Scripts.promote`), on a thread and connection of its own. Every worker
/// runs one; the script is atomic, so any number of them share the work.
///
/// It sleeps until the earliest job is due, at most `pollInterval` (another
/// worker may add an earlier one), and wakes at once when this worker delays a
/// job that is due sooner (`nudge`).
///
/// Thread rules: `nudge` and `stop` from any thread; Redis only on its own thread.
public final class DelayedJobPromoter: Sendable {
    let families: [QueueFamily]
    let url: RedisURL
    let batch: Int
    let pollInterval: Double
    let logger: Logger
    private let wake = Mutex<(due: UInt64, stopping: Bool)>((UInt64.max, false))
    private let signal = NSCondition()

    public convenience init(keys: Keys, modes: [Mode], url: RedisURL, batch: Int = 100, pollInterval: Double = 0.5, logger: Logger) {
        self.init(families: modes.map { QueueFamily(mode: $0, shard: nil, keys: keys) }, url: url, batch: batch,
                  pollInterval: pollInterval, logger: logger)
    }

    public init(families: [QueueFamily], url: RedisURL, batch: Int = 100, pollInterval: Double = 0.5, logger: Logger) {
        self.families = families
        self.url = url
        self.batch = batch
        self.pollInterval = pollInterval
        self.logger = logger
    }

    /// A job of this worker is due in `seconds`: wake up by then.
    public func nudge(dueIn seconds: Double) {
        let due = Clock.nowNanos() &+ UInt64(max(0, min(seconds, 3600)) * 1e9)
        let sooner = wake.withLock { w -> Bool in
            guard due < w.due else { return false }
            w.due = due
            return true
        }
        if sooner { signal.lock(); signal.signal(); signal.unlock() }
    }

    public func stop() {
        wake.withLock { $0.stopping = true }
        signal.lock(); signal.signal(); signal.unlock()
    }

    /// Runs until `stop`.
    public func run() async {
        await runOnThread(named: "llmq-delayed", loop: { self.loop() }, stop: { self.stop() })
    }

    private var isStopping: Bool { wake.withLock { $0.stopping } }

    func loop() {
        var connection: RedisConnection?
        var backoff = 0.05
        while !isStopping {
            var next = pollInterval
            do throws(LLMQError) {
                if connection == nil { connection = try RedisConnection(url) }
                for family in families {
                    let r = try promote(family, connection!)
                    if r.moved > 0 {
                        FarmMetrics.promoted(mode: family.mode, count: r.moved)
                        logger.debug("moved due jobs back to their queue", metadata: ["mode": "\(family)", "jobs": "\(r.moved)"])
                    }
                    if let w = r.nextDue { next = min(next, w) }
                }
                backoff = 0.05
            } catch {
                logger.warning("delayed-job mover lost Redis, retrying", metadata: ["error": "\(error.message)"])
                FarmMetrics.redisReconnect(component: "delayed")
                connection = nil
                next = backoff
                backoff = min(backoff * 2, 2)
            }
            sleep(upTo: next)
        }
    }

    private func promote(_ family: QueueFamily, _ c: RedisConnection) throws(LLMQError) -> (moved: Int, nextDue: Double?) {
        var cmd: [UInt8] = []
        Scripts.appendEval(Scripts.promote, keys: [family.delayed, family.queue], args: [Array(String(batch).utf8)], to: &cmd)
        try cmd.withUnsafeBufferPointer { b throws(LLMQError) in try c.appendEncoded(b) }
        let reply = try c.reply()
        if case .error(let e) = reply { throw .redis("moving due jobs of \(family) failed: \(e)") }
        guard let a = reply.array, a.count == 2, let moved = a[0].integer, let wait = a[1].integer else {
            throw .redis("unexpected reply to the delayed-job script: \(reply)")
        }
        // A full batch means more may be due right now.
        if moved >= batch { return (moved, 0) }
        return (moved, wait < 0 ? nil : Double(wait) / 1000)
    }

    private func sleep(upTo seconds: Double) {
        let until = Clock.nowNanos() &+ UInt64(max(0, seconds) * 1e9)
        signal.lock()
        defer { signal.unlock() }
        while true {
            let (due, stopping) = wake.withLock { w in (w.due, w.stopping) }
            let end = min(until, due)
            let now = Clock.nowNanos()
            if stopping || now >= end { break }
            _ = signal.wait(until: Date(timeIntervalSinceNow: Double(end - now) / 1e9))
        }
        wake.withLock { w in if w.due <= Clock.nowNanos() &+ 1_000_000 { w.due = .max } }
    }
}
