/// What the sim has served so far, shared by all connections.
actor SimState {
    private var requests = 0
    private var active = 0
    private var aborted = 0
    /// The most streams open at once so far.
    private var peakActive = 0
    /// Requests seen per `key` knob, for `fail_times`.
    private var keyedRequests: [String: Int] = [:]
    /// Requests per wire format other than OpenAI's (`anthropic`, `gemini`, … and `azure`).
    private var byFormat: [String: Int] = [:]

    /// Counts a request and returns its serial number, used in response ids.
    func admit() -> Int {
        self.requests += 1
        return self.requests
    }

    /// The fault this request gets: the one it asks for, or none once its key has used up
    /// its `fail_times`.
    func fault(for knobs: SimKnobs) -> SimFault? {
        guard let fault = knobs.requestedFault else { return nil }
        guard let failTimes = knobs.failTimes else { return fault }
        let seen = self.keyedRequests[knobs.key, default: 0] + 1
        self.keyedRequests[knobs.key] = seen
        return seen <= failTimes ? fault : nil
    }

    func count(format: String) {
        self.byFormat[format, default: 0] += 1
    }

    func streamOpened() {
        self.active += 1
        self.peakActive = max(self.peakActive, self.active)
    }

    func streamClosed(aborted: Bool) {
        self.active -= 1
        if aborted { self.aborted += 1 }
    }

    /// Flat numbers: `requests`, `active`, `aborted`, `peak_active`, and `requests_FORMAT` per wire format seen.
    var stats: SimJSON {
        var members: [(String, SimJSON)] = [
            ("requests", .int(self.requests)), ("active", .int(self.active)), ("aborted", .int(self.aborted)), ("peak_active", .int(self.peakActive)),
        ]
        for (format, n) in self.byFormat.sorted(by: { $0.key < $1.key }) { members.append(("requests_\(format)", .int(n))) }
        return .object(members)
    }
}
