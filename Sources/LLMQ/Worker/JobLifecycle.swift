/// The decisions of one job's visit to a worker, apart from all I/O: which
/// target to call next, when to wait (in Redis, never in the worker), when to
/// put the job back, bury it or finish it. `JobRunner` feeds it what happened
/// and carries out the actions it returns; the tests drive it alone.
///
/// Rules it encodes (PROTOCOL.md, guarantees 1 and 6):
/// - A route's targets are tried in order within one attempt, moving on only
///   while no output went out and the error allows a fallback.
/// - Only a call that was made counts as an attempt; skipping a provider that
///   cools down does not. When every target cools down, the job waits in the
///   delayed set until the first one is free.
/// - A retry waits for a full-jitter exponential backoff, at least as long as
///   the upstream asked (Retry-After) and until a target is free.
/// - `deadline` and the job's time budget (`timeout_s`) bound every wait: a job
///   that could not start in time ends `expired` or `timeout` now, not later.
/// - Cancellation ends the job; a drain puts it back at the head of its queue;
///   a lost lease abandons it without a write (the reaper owns it from then on).
///
/// Times are Unix seconds.
public struct JobLifecycle: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Attempts spent by earlier visits (the job's `attempts`).
        public var attemptsSpent: Int
        public var maxAttempts: Int
        public var targets: Int
        public var deadline: Double?
        public var notBefore: Double?
        /// When the job's `timeout_s` runs out, counted from this pickup.
        public var budgetEnd: Double?
        public var retryBase: Double
        public var retryCap: Double

        public init(attemptsSpent: Int, maxAttempts: Int, targets: Int, deadline: Double? = nil, notBefore: Double? = nil,
                    budgetEnd: Double? = nil, retryBase: Double = 0.25, retryCap: Double = 10) {
            self.attemptsSpent = attemptsSpent
            self.maxAttempts = maxAttempts
            self.targets = targets
            self.deadline = deadline
            self.notBefore = notBefore
            self.budgetEnd = budgetEnd
            self.retryBase = retryBase
            self.retryCap = retryCap
        }
    }

    /// How one call to a target ended.
    public enum CallOutcome: Sendable, Equatable {
        case succeeded
        /// `outputSent`: events of this attempt already reached subscribers.
        case failed(LLMQError, outputSent: Bool)
    }

    public enum Event: Sendable, Equatable {
        /// The worker took the job. `cooling[i]`: seconds target i still cools down, nil when free.
        case picked(now: Double, cancelRequested: Bool, cooling: [Double?])
        /// The call returned; `jitter` in 0...1 spreads the backoff.
        case callEnded(CallOutcome, now: Double, cooling: [Double?], jitter: Double)
        case cancelled
        /// The worker drains: the job goes back to its queue.
        case drained(outputSent: Bool)
        /// The worker could not renew its lease: another worker may own the job now.
        case leaseLost
    }

    /// What the job waits for in the delayed set.
    public struct Wait: Sendable, Equatable {
        /// When the job is due again (Unix seconds).
        public var until: Double
        /// The job's `attempts` as it goes back.
        public var attemptsSpent: Int
        /// The job's `timeout_s` as it goes back: its budget left after the wait.
        public var timeoutLeft: Double?
        /// The next attempt's number, when a `retry` event must announce it (output had gone out).
        public var announce: Int?
        public var reason: Reason

        public init(until: Double, attemptsSpent: Int, timeoutLeft: Double?, announce: Int?, reason: Reason) {
            self.until = until
            self.attemptsSpent = attemptsSpent
            self.timeoutLeft = timeoutLeft
            self.announce = announce
            self.reason = reason
        }

        public enum Reason: String, Sendable {
            case notBefore = "not_before"
            case cooldown
            case retry
        }
    }

    public enum Action: Sendable, Equatable {
        /// Call target `target` as attempt number `attempt`.
        case call(target: Int, attempt: Int)
        case wait(Wait)
        /// Put the job back at the head of its queue now.
        case requeue(attemptsSpent: Int, timeoutLeft: Double?, announce: Int?)
        /// The last call succeeded: write `done`.
        case finish(attempt: Int)
        /// End with an error; `deadLetter` also moves the job to the dead list.
        case fail(LLMQError, attempt: Int, deadLetter: Bool)
        /// Stop without writing anything.
        case abandon
        /// The job already ended; nothing to do.
        case none
    }

    enum State: Equatable {
        case waitingForPickup
        /// Calling `target` in attempt `attemptsSpent + 1`; `called` says whether any call of this attempt was made.
        case calling(target: Int, called: Bool)
        case ended
    }

    public let limits: Limits
    private(set) var state: State = .waitingForPickup
    private var lastError: LLMQError?

    public init(_ limits: Limits) { self.limits = limits }

    public var attempt: Int { limits.attemptsSpent + 1 }

    public mutating func handle(_ event: Event) -> Action {
        switch (state, event) {
        case (.ended, _):
            return .none
        case (_, .leaseLost):
            state = .ended
            return .abandon
        case (_, .cancelled):
            return end(LLMQError(.cancelled, "the request was cancelled"))
        case (.waitingForPickup, .picked(let now, let cancelRequested, let cooling)):
            return picked(now: now, cancelRequested: cancelRequested, cooling: cooling)
        case (.waitingForPickup, .drained):
            state = .ended
            return .requeue(attemptsSpent: limits.attemptsSpent, timeoutLeft: nil, announce: nil)
        case (.calling, .drained(let outputSent)):
            state = .ended
            // A cut attempt that had sent output counts, and subscribers hear that another follows.
            let spent = outputSent ? attempt : limits.attemptsSpent
            return .requeue(attemptsSpent: spent, timeoutLeft: nil, announce: outputSent ? attempt + 1 : nil)
        case (.calling(let target, _), .callEnded(let outcome, let now, let cooling, let jitter)):
            return callEnded(target: target, outcome: outcome, now: now, cooling: cooling, jitter: jitter)
        default:
            return .none
        }
    }

    private mutating func picked(now: Double, cancelRequested: Bool, cooling: [Double?]) -> Action {
        if cancelRequested { return end(LLMQError(.cancelled, "the request was cancelled before it started")) }
        if let d = limits.deadline, now > d {
            return end(LLMQError(.expired, "the job's deadline \(d) passed before a worker could start it"))
        }
        if let b = limits.budgetEnd, now >= b {
            return end(LLMQError(.timeout, "the job's timeout_s ran out before a worker could start it"))
        }
        if let nb = limits.notBefore, nb > now {
            return wait(until: nb, now: now, spent: limits.attemptsSpent, announce: nil, reason: .notBefore, cause: nil)
        }
        return choose(from: 0, called: false, now: now, cooling: cooling, outputSent: false, jitter: 0.5)
    }

    /// The first target from `index` on that does not cool down; when none is left, a retry or a wait.
    private mutating func choose(from index: Int, called: Bool, now: Double, cooling: [Double?], outputSent: Bool, jitter: Double) -> Action {
        var i = index
        while i < limits.targets {
            if (i < cooling.count ? cooling[i] : nil) == nil {
                state = .calling(target: i, called: called)
                return .call(target: i, attempt: attempt)
            }
            i += 1
        }
        if called, let e = lastError {
            return retryOrFail(e, outputSent: outputSent, now: now, cooling: cooling, jitter: jitter)
        }
        // Nothing was called in this visit: every target cools down, which is not an attempt.
        let free = Self.earliestFree(cooling) ?? limits.retryBase
        let spread = free * 0.1 * jitter  // jobs that waited on one cooldown don't all return in the same millisecond
        let cause = LLMQError(.rateLimited, "every target of the route is cooling down", retryable: true, retryAfter: free)
        return wait(until: now + free + spread, now: now, spent: limits.attemptsSpent, announce: nil, reason: .cooldown, cause: cause)
    }

    private mutating func callEnded(target: Int, outcome: CallOutcome, now: Double, cooling: [Double?], jitter: Double) -> Action {
        switch outcome {
        case .succeeded:
            state = .ended
            return .finish(attempt: attempt)
        case .failed(let error, let outputSent):
            lastError = error
            if !outputSent && Self.fallsBack(error) && target + 1 < limits.targets {
                return choose(from: target + 1, called: true, now: now, cooling: cooling, outputSent: false, jitter: jitter)
            }
            return retryOrFail(error, outputSent: outputSent, now: now, cooling: cooling, jitter: jitter)
        }
    }

    private mutating func retryOrFail(_ error: LLMQError, outputSent: Bool, now: Double, cooling: [Double?], jitter: Double) -> Action {
        guard error.retryable, error.code != .cancelled else { return end(error) }
        guard attempt < limits.maxAttempts else {
            var e = error
            if limits.maxAttempts > 1 { e.message += " (attempt \(attempt) of \(limits.maxAttempts))" }
            return end(e)
        }
        let delay = max(backoff(attempt: attempt, jitter: jitter), error.retryAfter ?? 0, Self.earliestFree(cooling) ?? 0)
        return wait(until: now + delay, now: now, spent: attempt, announce: outputSent ? attempt + 1 : nil, reason: .retry, cause: error)
    }

    /// Full-jitter exponential backoff for the attempt that just failed.
    public func backoff(attempt: Int, jitter: Double) -> Double {
        let exponent = Double(min(max(0, attempt - 1), 60))
        let ceiling = min(limits.retryCap, limits.retryBase * Double.pow2(exponent))
        return ceiling * min(max(jitter, 0), 1)
    }

    private mutating func wait(until due: Double, now: Double, spent: Int, announce: Int?, reason: Wait.Reason, cause: LLMQError?) -> Action {
        let why = cause.map { " (\($0.code.rawValue): \($0.message))" } ?? ""
        if let d = limits.deadline, due > d {
            return end(LLMQError(.expired, "the job would wait until after its deadline \(d) to start again\(why)"), attempt: spent + 1)
        }
        if let b = limits.budgetEnd, due >= b {
            return end(LLMQError(.timeout, "the job's timeout_s runs out before it could start again\(why)"), attempt: spent + 1)
        }
        state = .ended
        return .wait(Wait(until: due, attemptsSpent: spent, timeoutLeft: limits.budgetEnd.map { $0 - due }, announce: announce, reason: reason))
    }

    private mutating func end(_ error: LLMQError, attempt n: Int? = nil) -> Action {
        state = .ended
        // Failed for good goes to the dead list; a cancellation or an expiry is what the producer asked for.
        let dead = error.code != .cancelled && error.code != .expired
        return .fail(error, attempt: n ?? attempt, deadLetter: dead)
    }

    static func earliestFree(_ cooling: [Double?]) -> Double? {
        cooling.compactMap { $0 }.min()
    }

    /// Whether an error before any output moves on to the route's next target.
    public static func fallsBack(_ e: LLMQError) -> Bool {
        switch e.code {
        case .badRequest, .cancelled, .expired, .invalidJob: false
        default: true
        }
    }
}

extension Double {
    static func pow2(_ e: Double) -> Double { Double(sign: .plus, exponent: Int(e), significand: 1) }
}
