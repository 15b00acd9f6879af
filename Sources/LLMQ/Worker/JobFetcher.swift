import Foundation
import Logging
import Synchronization

/// Moves jobs of one mode from the queue into this worker's in-flight list,
/// only while it holds a permit for each, on a thread and connection of its
/// own (BLMOVE blocks).
public final class JobFetcher: Sendable {
    let mode: String
    let queueKey: [UInt8]
    let inflightKey: [UInt8]
    let url: RedisURL
    let permits: Permits
    let deliver: @Sendable ([UInt8]) -> Void
    let onExit: @Sendable () -> Void
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    /// Seconds BLMOVE waits before it checks whether to stop.
    static let blockSeconds = "0.5"

    public init(mode: String, keys: Keys, worker: String, url: RedisURL, permits: Permits, logger: Logger,
                deliver: @escaping @Sendable ([UInt8]) -> Void, onExit: @escaping @Sendable () -> Void) {
        self.mode = mode
        queueKey = Array(keys.queue(mode).utf8)
        inflightKey = Array(keys.inflight(mode, worker: worker).utf8)
        self.url = url
        self.permits = permits
        self.deliver = deliver
        self.onExit = onExit
        self.logger = logger
    }

    public func start() {
        let t = Thread { [self] in
            self.loop()
            self.onExit()
        }
        t.name = "llmq-fetch-\(mode)"
        t.start()
    }

    /// Stops taking jobs; the thread ends within `blockSeconds`.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        permits.close()
    }

    private var isStopping: Bool { stopping.load(ordering: .relaxed) }

    private func loop() {
        var connection: RedisConnection?
        var backoff = 0.05
        let blmove: [[UInt8]] = [Array("BLMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8), Array(Self.blockSeconds.utf8)]
        let lmove: [[UInt8]] = [Array("LMOVE".utf8), queueKey, inflightKey, Array("RIGHT".utf8), Array("LEFT".utf8)]
        while !isStopping {
            if connection == nil {
                do {
                    connection = try RedisConnection(url)
                    backoff = 0.05
                } catch {
                    logger.error("fetcher cannot reach Redis, retrying", metadata: ["mode": "\(mode)", "error": "\(error.message)"])
                    Thread.sleep(forTimeInterval: backoff)
                    backoff = min(backoff * 2, 2)
                    continue
                }
            }
            guard permits.acquire() else { break }
            do {
                guard case .string(let job) = try connection!.command(blmove) else {
                    permits.release()
                    continue
                }
                deliver(job)
                // A backlog is drained in pipelined batches rather than one round trip per job.
                var extra = permits.tryAcquire(max: 32)
                while extra > 0 && !isStopping {
                    for _ in 0..<extra { try connection!.append(lmove) }
                    var got = 0
                    for _ in 0..<extra {
                        if case .string(let j) = try connection!.reply() { deliver(j); got += 1 } else { permits.release() }
                    }
                    extra = got == extra ? permits.tryAcquire(max: 32) : 0
                }
            } catch {
                // A BLMOVE may have moved a job before the connection broke; it stays in the
                // in-flight list and is recovered when this worker (or the reaper) restarts it.
                permits.release()
                logger.error("fetcher lost Redis, reconnecting", metadata: ["mode": "\(mode)", "error": "\(error.message)"])
                connection = nil
            }
        }
    }
}
