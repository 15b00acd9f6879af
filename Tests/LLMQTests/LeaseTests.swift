import LLMQ
import Testing

/// The lease alone, on an injected clock (nanoseconds the test chooses).
@Suite struct LeaseTests {
    static let s: UInt64 = 1_000_000_000

    @Test func aFreshLeaseHoldsUntilFourFifthsOfItsTTL() {
        let lease = Lease(ttl: 5, now: 0)
        #expect(lease.holds(1, now: 0) && lease.admitsWork(now: 0))
        #expect(lease.holds(1, now: 3 * Self.s + 999_999_999))
        #expect(!lease.holds(1, now: 4 * Self.s) && lease.lapsed(now: 4 * Self.s))
    }

    @Test func renewalsKeepItHeldInTheSameEpoch() {
        let lease = Lease(ttl: 5, now: 0)
        for t in 1...20 { #expect(lease.renewed(sentAt: UInt64(t) * Self.s) == false) }
        #expect(lease.epoch == 1 && lease.holds(1, now: 23 * Self.s))
    }

    @Test func aLapseStartsANewEpochAndTheOldOneNeverHoldsAgain() {
        let lease = Lease(ttl: 5, now: 0)
        #expect(lease.fenceIfLapsed(now: 3 * Self.s) == false)
        #expect(lease.fenceIfLapsed(now: 6 * Self.s) == true)
        #expect(lease.fenceIfLapsed(now: 7 * Self.s) == false, "one lapse, one new epoch")
        #expect(lease.epoch == 2 && !lease.admitsWork(now: 6 * Self.s))
        // The heartbeat comes back: the worker must recover before it takes work again.
        #expect(lease.renewed(sentAt: 8 * Self.s) == true)
        #expect(!lease.holds(1, now: 8 * Self.s), "work taken before the lapse stays fenced off")
        #expect(!lease.admitsWork(now: 8 * Self.s))
        lease.recovered()
        #expect(lease.admitsWork(now: 8 * Self.s) && lease.holds(2, now: 8 * Self.s) && !lease.holds(1, now: 8 * Self.s))
    }

    @Test func aRenewalThatArrivesAfterALapseStartsTheNewEpochItself() {
        // The heartbeat's own thread was stalled too: no watchdog saw the lapse first.
        let lease = Lease(ttl: 5, now: 0)
        #expect(lease.renewed(sentAt: 9 * Self.s) == true)
        #expect(lease.epoch == 2 && !lease.holds(1, now: 9 * Self.s))
    }

    @Test func aRenewalSentBeforeTheLapseButAnsweredAfterItDoesNotReviveTheOldEpoch() {
        let lease = Lease(ttl: 5, now: 0)
        #expect(lease.fenceIfLapsed(now: 5 * Self.s))
        // Sent at 3 s (in time), acknowledged after the watchdog had fenced.
        #expect(lease.renewed(sentAt: 3 * Self.s) == true, "a lapse is pending until the worker recovered")
        #expect(!lease.holds(1, now: 5 * Self.s))
    }

    @Test func shortTTLsKeepAMargin() {
        let lease = Lease(ttl: 1, now: 0)
        #expect(lease.holds(1, now: Self.s / 2 - 1) && !lease.holds(1, now: Self.s / 2))
    }

    /// What a worker knows it holds, against its in-flight list after a fetch whose reply was lost:
    /// identical jobs are counted, other families do not mix in, and a job that finished while the list
    /// was being read is not taken for one the worker never saw.
    @Test func heldJobsFindOnlyWhatTheWorkerNeverSaw() {
        let held = HeldJobs()
        let chat = QueueFamily(mode: .chat, shard: nil, keys: Keys())
        let embed = QueueFamily(mode: .embed, shard: nil, keys: Keys())
        let a = Array(#"{"id":"a"}"#.utf8), b = Array(#"{"id":"b"}"#.utf8), c = Array(#"{"id":"c"}"#.utf8)
        held.add(a, family: chat)
        held.add(a, family: chat)
        held.add(b, family: embed)
        held.beginReconcile(family: chat)
        held.add(c, family: chat)
        held.remove(c, family: chat)  // finished between the LRANGE and the comparison
        #expect(held.orphans(in: [a, a, a, b, c], family: chat) == [a, b])
        held.remove(a, family: chat)
        held.beginReconcile(family: chat)
        #expect(held.orphans(in: [a, a], family: chat) == [a])
        held.remove(a, family: chat)
        held.remove(a, family: chat)  // one more than it held: nothing goes negative
        held.beginReconcile(family: chat)
        #expect(held.orphans(in: [a], family: chat) == [a])
        held.beginReconcile(family: embed)
        #expect(held.orphans(in: [b], family: embed) == [])
    }
}
