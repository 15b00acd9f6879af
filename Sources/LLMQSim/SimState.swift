/// What the sim has served so far, shared by all connections.
actor SimState {
    private var requests = 0
    private var active = 0
    private var aborted = 0
    /// The most streams open at once so far.
    private var peakActive = 0
    /// Requests seen per `key` knob, for `fail_times`.
    private var keyedRequests: [String: Int] = [:]
    /// Draws so far per `key` knob, for chance faults.
    private var keyedDraws: [String: UInt64] = [:]
    /// Requests per wire format other than OpenAI's (`anthropic`, `gemini`, … and `azure`).
    private var byFormat: [String: Int] = [:]
    /// Embedding requests and the inputs they carried (OpenAI's format), to check what a cache sent upstream.
    private var embeddingRequests = 0
    private var embeddingInputs = 0

    /// Counts a request and returns its serial number, used in response ids.
    func admit() -> Int {
        self.requests += 1
        return self.requests
    }

    /// The fault this request gets: the one it asks for, or none once its key has used up
    /// its `fail_times`.
    func fault(for knobs: SimKnobs) -> SimFault? {
        guard let fault = knobs.requestedFault else { return knobs.chances.any ? self.draw(knobs) : nil }
        guard let failTimes = knobs.failTimes else { return fault }
        let seen = self.keyedRequests[knobs.key, default: 0] + 1
        self.keyedRequests[knobs.key] = seen
        return seen <= failTimes ? fault : nil
    }

    /// A chance fault: one uniform draw from SplitMix64 seeded by the `seed` knob, the `key`
    /// and the request's rank among that key's requests, so a storm replays the same per key.
    private func draw(_ knobs: SimKnobs) -> SimFault? {
        let rank = self.keyedDraws[knobs.key, default: 0]
        self.keyedDraws[knobs.key] = rank + 1
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in knobs.key.utf8 { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        var z = knobs.seed ^ h ^ (rank &* 0x9e37_79b9_7f4a_7c15)
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        return knobs.chances.fault(at: Double(z >> 11) / Double(UInt64(1) << 53))
    }

    func count(format: String) {
        self.byFormat[format, default: 0] += 1
    }

    func countEmbeddings(inputs: Int) {
        self.embeddingRequests += 1
        self.embeddingInputs += inputs
    }

    func streamOpened() {
        self.active += 1
        self.peakActive = max(self.peakActive, self.active)
    }

    func streamClosed(aborted: Bool) {
        self.active -= 1
        if aborted { self.aborted += 1 }
    }

    /// Flat numbers: `requests`, `active`, `aborted`, `peak_active`, `embedding_requests`, `embedding_inputs`,
    /// and `requests_FORMAT` per wire format seen.
    var stats: SimJSON {
        var members: [(String, SimJSON)] = [
            ("requests", .int(self.requests)), ("active", .int(self.active)), ("aborted", .int(self.aborted)), ("peak_active", .int(self.peakActive)),
            ("embedding_requests", .int(self.embeddingRequests)), ("embedding_inputs", .int(self.embeddingInputs)),
        ]
        for (format, n) in self.byFormat.sorted(by: { $0.key < $1.key }) { members.append(("requests_\(format)", .int(n))) }
        return .object(members)
    }
}
