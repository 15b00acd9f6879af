import LLMQ
import Testing

/// The job lifecycle alone: no Redis, no HTTP, no clock but the one the test passes.
@Suite struct JobLifecycleTests {
    typealias L = JobLifecycle

    static func machine(spent: Int = 0, max: Int = 3, targets: Int = 1, deadline: Double? = nil, notBefore: Double? = nil,
                        budgetEnd: Double? = nil) -> L {
        L(.init(attemptsSpent: spent, maxAttempts: max, targets: targets, deadline: deadline, notBefore: notBefore, budgetEnd: budgetEnd,
                retryBase: 1, retryCap: 8))
    }

    static let free: [Double?] = [nil, nil, nil]
    static let t0 = 1_000.0
    static let e429 = LLMQError(.rateLimited, "slow down", retryable: true, retryAfter: 3)
    static let e503 = LLMQError(.upstreamUnavailable, "down", retryable: true)
    static let eAuth = LLMQError(.auth, "bad key")
    static let eBad = LLMQError(.badRequest, "no such option")

    @Test func aFreshJobCallsTheFirstTargetAsAttemptOne() {
        var m = Self.machine(targets: 2)
        #expect(m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free)) == .call(target: 0, attempt: 1))
        #expect(m.handle(.callEnded(.succeeded, now: Self.t0 + 1, cooling: Self.free, jitter: 0)) == .finish(attempt: 1))
        #expect(m.handle(.cancelled) == .none, "a finished job ignores what comes after")
    }

    @Test func attemptsCountFromWhatEarlierVisitsSpent() {
        var m = Self.machine(spent: 2, max: 5)
        #expect(m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free)) == .call(target: 0, attempt: 3))
    }

    @Test func aCancelRequestedAtFetchEndsWithoutACall() {
        var m = Self.machine()
        guard case .fail(let e, 1, false) = m.handle(.picked(now: Self.t0, cancelRequested: true, cooling: Self.free)) else {
            Issue.record("expected a cancellation without dead letter")
            return
        }
        #expect(e.code == .cancelled)
    }

    @Test func aPassedDeadlineExpiresAndIsNotDeadLettered() {
        var m = Self.machine(deadline: Self.t0 - 1)
        guard case .fail(let e, _, let dead) = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free)) else {
            Issue.record("expected expired")
            return
        }
        #expect(e.code == .expired && !dead)
    }

    @Test func aSpentBudgetTimesOutAtPickup() {
        var m = Self.machine(budgetEnd: Self.t0)
        guard case .fail(let e, _, true) = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free)) else {
            Issue.record("expected timeout")
            return
        }
        #expect(e.code == .timeout)
    }

    @Test func notBeforeWaitsWithoutSpendingAnAttempt() {
        var m = Self.machine(spent: 1, notBefore: Self.t0 + 30)
        let a = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        #expect(a == .wait(.init(until: Self.t0 + 30, attemptsSpent: 1, timeoutLeft: nil, announce: nil, reason: .notBefore)))
    }

    @Test func notBeforeAfterTheDeadlineExpiresAtOnce() {
        var m = Self.machine(deadline: Self.t0 + 10, notBefore: Self.t0 + 30)
        guard case .fail(let e, _, false) = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free)) else {
            Issue.record("expected expired")
            return
        }
        #expect(e.code == .expired)
    }

    @Test func aCoolingTargetIsSkippedForTheNextWithoutAnAttempt() {
        var m = Self.machine(targets: 3)
        #expect(m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: [5, nil, nil])) == .call(target: 1, attempt: 1))
    }

    @Test func whenEveryTargetCoolsTheJobWaitsForTheFirstToBeFreeAndSpendsNothing() {
        var m = Self.machine(spent: 0, targets: 2, budgetEnd: Self.t0 + 100)
        let a = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: [20, 7]))
        guard case .wait(let w) = a else {
            Issue.record("expected a wait, got \(a)")
            return
        }
        #expect(w.reason == .cooldown && w.attemptsSpent == 0 && w.announce == nil)
        #expect(w.until >= Self.t0 + 7 && w.until <= Self.t0 + 7 * 1.1 + 0.001)
        #expect(w.timeoutLeft == (Self.t0 + 100) - w.until)
    }

    @Test func aCooldownLongerThanTheBudgetTimesOutNow() {
        var m = Self.machine(budgetEnd: Self.t0 + 5)
        guard case .fail(let e, 1, true) = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: [30])) else {
            Issue.record("expected timeout")
            return
        }
        #expect(e.code == .timeout && e.message.contains("rate_limited"))
    }

    @Test func aCooldownPastTheDeadlineExpiresNow() {
        var m = Self.machine(deadline: Self.t0 + 5)
        guard case .fail(let e, _, false) = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: [30])) else {
            Issue.record("expected expired")
            return
        }
        #expect(e.code == .expired)
    }

    @Test func beforeOutputAFailureFallsBackToTheNextTargetInTheSameAttempt() {
        var m = Self.machine(targets: 3)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        #expect(m.handle(.callEnded(.failed(Self.e503, outputSent: false), now: Self.t0, cooling: Self.free, jitter: 0.5))
            == .call(target: 1, attempt: 1))
        #expect(m.handle(.callEnded(.failed(Self.e429, outputSent: false), now: Self.t0, cooling: [nil, 3, nil], jitter: 0.5))
            == .call(target: 2, attempt: 1))
    }

    @Test func afterOutputThereIsNoFallbackButARetryAnnouncedWithItsDelay() {
        var m = Self.machine(max: 3, targets: 2)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        let a = m.handle(.callEnded(.failed(Self.e503, outputSent: true), now: Self.t0, cooling: Self.free, jitter: 1))
        #expect(a == .wait(.init(until: Self.t0 + 1, attemptsSpent: 1, timeoutLeft: nil, announce: 2, reason: .retry)))
    }

    @Test func theLastTargetsFailureWaitsABackoffNoShorterThanRetryAfterAndCounts() {
        var m = Self.machine(max: 3)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        let a = m.handle(.callEnded(.failed(Self.e429, outputSent: false), now: Self.t0, cooling: [nil], jitter: 0))
        #expect(a == .wait(.init(until: Self.t0 + 3, attemptsSpent: 1, timeoutLeft: nil, announce: nil, reason: .retry)))
    }

    @Test func aRetryWaitsUntilATargetIsFreeWhenThatIsLonger() {
        var m = Self.machine(max: 3, targets: 1)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        let a = m.handle(.callEnded(.failed(Self.e429, outputSent: false), now: Self.t0, cooling: [12], jitter: 0))
        guard case .wait(let w) = a else {
            Issue.record("expected a wait, got \(a)")
            return
        }
        #expect(w.until == Self.t0 + 12 && w.attemptsSpent == 1)
    }

    @Test func theBackoffGrowsAndIsCapped() {
        let m = Self.machine()
        #expect(m.backoff(attempt: 1, jitter: 1) == 1)
        #expect(m.backoff(attempt: 2, jitter: 1) == 2)
        #expect(m.backoff(attempt: 4, jitter: 1) == 8)
        #expect(m.backoff(attempt: 200, jitter: 1) == 8)
        #expect(m.backoff(attempt: 3, jitter: 0.5) == 2)
        #expect(m.backoff(attempt: Int.max, jitter: 2) == 8, "absurd inputs are clamped, never trap")
    }

    @Test func theLastAttemptFailsWithTheCountInTheMessageAndIsDeadLettered() {
        var m = Self.machine(spent: 2, max: 3)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        guard case .fail(let e, 3, true) = m.handle(.callEnded(.failed(Self.e503, outputSent: false), now: Self.t0, cooling: Self.free, jitter: 0))
        else {
            Issue.record("expected the final failure")
            return
        }
        #expect(e.code == .upstreamUnavailable && e.message.hasSuffix("(attempt 3 of 3)"))
    }

    @Test func aNonRetryableErrorFailsAtOnce() {
        var m = Self.machine(max: 5, targets: 2)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        guard case .fail(let e, 1, true) = m.handle(.callEnded(.failed(Self.eBad, outputSent: false), now: Self.t0, cooling: Self.free, jitter: 0))
        else {
            Issue.record("expected bad_request to end the job without a fallback")
            return
        }
        #expect(e.code == .badRequest)
    }

    @Test func authFallsBackButDoesNotRetry() {
        var m = Self.machine(max: 5, targets: 2)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        #expect(m.handle(.callEnded(.failed(Self.eAuth, outputSent: false), now: Self.t0, cooling: Self.free, jitter: 0)) == .call(target: 1, attempt: 1))
        guard case .fail(let e, 1, true) = m.handle(.callEnded(.failed(Self.eAuth, outputSent: false), now: Self.t0, cooling: Self.free, jitter: 0))
        else {
            Issue.record("expected auth to end the job")
            return
        }
        #expect(e.code == .auth)
    }

    @Test func aFailedCallFollowedByCoolingTargetsCountsAsAnAttempt() {
        var m = Self.machine(max: 3, targets: 2)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        let a = m.handle(.callEnded(.failed(Self.e503, outputSent: false), now: Self.t0, cooling: [nil, 9], jitter: 0))
        #expect(a == .wait(.init(until: Self.t0 + 9, attemptsSpent: 1, timeoutLeft: nil, announce: nil, reason: .retry)))
        var m2 = Self.machine(max: 3, targets: 2)
        _ = m2.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        // The first target cools down after its failure; the second already does.
        #expect(m2.handle(.callEnded(.failed(Self.e429, outputSent: false), now: Self.t0, cooling: [30, 9], jitter: 0))
            == .wait(.init(until: Self.t0 + 9, attemptsSpent: 1, timeoutLeft: nil, announce: nil, reason: .retry)))
    }

    @Test func aRetryThatWouldOutliveTheBudgetTimesOut() {
        var m = Self.machine(max: 5, budgetEnd: Self.t0 + 2)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        guard case .fail(let e, 2, true) = m.handle(.callEnded(.failed(Self.e429, outputSent: false), now: Self.t0, cooling: [nil], jitter: 0))
        else {
            Issue.record("expected timeout")
            return
        }
        #expect(e.code == .timeout)
    }

    @Test func aWaitCarriesTheBudgetLeftAfterIt() {
        var m = Self.machine(max: 5, budgetEnd: Self.t0 + 60)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        guard case .wait(let w) = m.handle(.callEnded(.failed(Self.e429, outputSent: false), now: Self.t0 + 10, cooling: [nil], jitter: 0)) else {
            Issue.record("expected a wait")
            return
        }
        #expect(w.until == Self.t0 + 13 && w.timeoutLeft == 47)
    }

    @Test func aDrainBeforeAnyCallPutsTheJobBackUnchanged() {
        var m = Self.machine(spent: 1)
        #expect(m.handle(.drained(outputSent: false)) == .requeue(attemptsSpent: 1, timeoutLeft: nil, announce: nil))
    }

    @Test func aDrainMidStreamCountsTheAttemptAndAnnouncesTheNext() {
        var m = Self.machine(spent: 1)
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        #expect(m.handle(.drained(outputSent: true)) == .requeue(attemptsSpent: 2, timeoutLeft: nil, announce: 3))
        var quiet = Self.machine(spent: 1)
        _ = quiet.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        #expect(quiet.handle(.drained(outputSent: false)) == .requeue(attemptsSpent: 1, timeoutLeft: nil, announce: nil))
    }

    @Test func aLostLeaseAbandonsWithoutAWriteFromAnyState() {
        var fresh = Self.machine()
        #expect(fresh.handle(.leaseLost) == .abandon)
        var calling = Self.machine()
        _ = calling.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        #expect(calling.handle(.leaseLost) == .abandon)
        #expect(calling.handle(.callEnded(.succeeded, now: Self.t0, cooling: Self.free, jitter: 0)) == .none)
    }

    @Test func aCancelDuringACallEndsCancelledNotDeadLettered() {
        var m = Self.machine()
        _ = m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: Self.free))
        guard case .fail(let e, 1, false) = m.handle(.cancelled) else {
            Issue.record("expected cancelled")
            return
        }
        #expect(e.code == .cancelled)
    }

    /// Every sequence of up to four events from every start ends in exactly one
    /// terminal action, never calls a target out of range, and never spends more
    /// attempts than allowed.
    @Test func everyShortSequenceEndsOnceAndStaysInBounds() {
        let errors = [Self.e429, Self.e503, Self.eAuth, Self.eBad, LLMQError(.timeout, "t", retryable: true)]
        let coolings: [[Double?]] = [[nil, nil], [4, nil], [4, 6]]
        var events: [L.Event] = [.cancelled, .drained(outputSent: false), .drained(outputSent: true), .leaseLost]
        for c in coolings {
            events.append(.callEnded(.succeeded, now: Self.t0 + 1, cooling: c, jitter: 0.3))
            for e in errors {
                for out in [false, true] { events.append(.callEnded(.failed(e, outputSent: out), now: Self.t0 + 1, cooling: c, jitter: 0.7)) }
            }
        }
        var sequences = 0
        for spent in [0, 2] {
            for pickCooling in coolings {
                for a in events {
                    for b in events {
                        for c in events.prefix(8) {
                            var m = L(.init(attemptsSpent: spent, maxAttempts: 3, targets: 2, budgetEnd: Self.t0 + 50, retryBase: 1, retryCap: 8))
                            var actions = [m.handle(.picked(now: Self.t0, cancelRequested: false, cooling: pickCooling))]
                            for e in [a, b, c] { actions.append(m.handle(e)) }
                            sequences += 1
                            var ended = 0
                            for act in actions {
                                switch act {
                                case .call(let t, let n):
                                    #expect(ended == 0 && t >= 0 && t < 2 && n == spent + 1)
                                case .wait(let w):
                                    ended += 1
                                    #expect(w.attemptsSpent <= 3 && w.attemptsSpent >= spent && w.until >= Self.t0 && (w.timeoutLeft ?? 1) > 0)
                                case .fail(_, let n, _):
                                    ended += 1
                                    #expect(n <= 3)
                                case .requeue(let s, _, _):
                                    ended += 1
                                    #expect(s <= 3)
                                case .finish, .abandon:
                                    ended += 1
                                case .none:
                                    #expect(ended == 1)
                                }
                            }
                            #expect(ended <= 1, "\(actions)")
                        }
                    }
                }
            }
        }
        #expect(sequences > 10_000)
    }
}
