import Foundation

/// A counting semaphore of one mode's concurrency permits that a fetcher
/// thread can block on and a drain can interrupt.
///
/// Waiters are served in arrival order, and `tryAcquire` takes nothing while
/// anyone waits, so the fetchers of a sharded mode share the permits in turn.
///
/// Thread rules: any thread; state guarded by `condition`.
public final class Permits: @unchecked Sendable {  // guarded by `condition`
    private let condition = NSCondition()
    private var free: Int
    private var closed = false
    /// Tickets handed to waiters and the one served next.
    private var issued: UInt64 = 0
    private var serving: UInt64 = 0
    public let capacity: Int

    public init(_ capacity: Int) {
        self.capacity = capacity
        free = capacity
    }

    /// Blocks for one permit; false once closed.
    public func acquire() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let ticket = issued
        issued += 1
        while (free == 0 || ticket != serving) && !closed { condition.wait() }
        serving += 1
        // The next in line may find a permit too.
        condition.broadcast()
        if closed { return false }
        free -= 1
        return true
    }

    /// Takes up to `max` permits without blocking.
    public func tryAcquire(max: Int) -> Int {
        condition.lock()
        defer { condition.unlock() }
        if closed || issued != serving { return 0 }
        let n = min(max, free)
        free -= n
        return n
    }

    public func release(_ n: Int = 1) {
        condition.lock()
        free += n
        condition.broadcast()
        condition.unlock()
    }

    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    public var inUse: Int {
        condition.lock()
        defer { condition.unlock() }
        return capacity - free
    }
}
