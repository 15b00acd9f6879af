import Synchronization

/// Drives every upstream transfer of a worker process on `threads` threads of its own (lanes),
/// each with its own libcurl multi handle; new transfers go to the lanes in turn.
///
/// Thread rules: `perform` and `abort` may be called from anywhere.
public final class HTTPEngine: Sendable {
    private let lanes: [EngineLane]
    private let turn = Atomic<Int>(0)

    /// `connections`: upstream connections each lane keeps open, busy or idle; the most transfers that run at once.
    /// `threads`: lanes. One thread starts about 3,000 new streams a second on a loopback upstream (2-core machine);
    /// a second one helps a burst of thousands only with a core to spare.
    public init(sink: OutputSink?, connections: Int = 256, threads: Int = 1) {
        let n = max(1, threads)
        lanes = (0..<n).map { i in
            EngineLane(sink: sink, connections: connections, name: n == 1 ? "llmq-http" : "llmq-http-\(i)")
        }
    }

    public func start() {
        for lane in lanes { lane.start() }
    }

    /// Stops the threads once no transfer is running any more.
    public func shutdown() async {
        for lane in lanes { await lane.shutdown() }
    }

    /// Runs one request; `decoder` sees the body of a 2xx answer as it arrives. `admitted` is called on the
    /// engine's thread, with the `Clock` time, when the request is handed to libcurl.
    public func perform(_ request: HTTPRequest, decoder: StreamDecoder, output: PendingOutput?, token: TransferToken = TransferToken(),
                        admitted: (@Sendable (UInt64) -> Void)? = nil) async -> HTTPResult {
        let lane = lanes.count == 1 ? 0 : (turn.wrappingAdd(1, ordering: .relaxed).oldValue & Int.max) % lanes.count
        token.lane.store(lane, ordering: .relaxed)
        return await lanes[lane].perform(request, decoder: decoder, output: output, token: token, admitted: admitted)
    }

    /// Cuts a running transfer; its `perform` returns with `aborted` set.
    public func abort(_ token: TransferToken, reason: HTTPResult.Abort) {
        lanes[token.lane.load(ordering: .relaxed) % lanes.count].abort(token, reason: reason)
    }
}
