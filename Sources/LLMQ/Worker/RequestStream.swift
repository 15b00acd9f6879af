/// The Redis side of one request: turns its writer's pending lines into a
/// PUBLISH of whole lines to its channel plus one XADD per line to its log.
///
/// Thread rules: as `EventWriter`.
public final class RequestStream: PendingOutput, @unchecked Sendable {  // see EventWriter's thread rules
    public let writer: EventWriter
    /// The request's spans when tracing is on; set once, before the job runs.
    public var trace: JobTrace?
    let tokensKey: String
    let logKey: String
    let logTTL: String
    let keysResult: String
    private var logExpirySet = false
    /// The lease the job was taken under: once it is gone, pending lines are dropped, not written.
    let fence: (lease: Lease, epoch: UInt64)?
    /// RESP of `PUBLISH tokens` and `XADD log * line`, everything but the last argument.
    private let publishPrefix: [UInt8]
    private let xaddPrefix: [UInt8]
    private let pubsub: PubSub

    public init(writer: EventWriter, keys: Keys, logTTL: Int, fence: (lease: Lease, epoch: UInt64)? = nil) {
        self.writer = writer
        self.fence = fence
        pubsub = keys.pubsub
        tokensKey = keys.tokens(writer.id)
        logKey = keys.log(writer.id)
        keysResult = keys.result(writer.id)
        self.logTTL = String(logTTL)
        var p: [UInt8] = []
        RESP.appendArrayHeader(3, to: &p)
        RESP.appendBulk(keys.pubsub.publishCommand, to: &p)
        RESP.appendBulk(tokensKey, to: &p)
        publishPrefix = p
        var x: [UInt8] = []
        RESP.appendArrayHeader(5, to: &x)
        for a in ["XADD", logKey, "*", "line"] { RESP.appendBulk(a, to: &x) }
        xaddPrefix = x
    }

    public var hasPending: Bool { writer.hasPending }
    public var exceeded: Bool { writer.exceeded }

    /// Whether this request may still write (its worker's lease holds).
    var mayWrite: Bool { fence.map { $0.lease.holds($0.epoch) } ?? true }

    public func drain(into buffer: inout [UInt8]) -> Int {
        guard mayWrite else {
            writer.takePending { _, _ in }
            return 0
        }
        var n = 0
        writer.takePending { payload, starts in
            buffer.append(contentsOf: publishPrefix)
            RESP.appendBulk(payload, to: &buffer)
            n += 1
            for (i, start) in starts.enumerated() {
                let end = i + 1 < starts.count ? starts[i + 1] : payload.count
                buffer.append(contentsOf: xaddPrefix)
                RESP.appendBulk(UnsafeBufferPointer(rebasing: payload[start..<(end - 1)]), to: &buffer)
                n += 1
            }
        }
        if n > 0 && !logExpirySet {
            RESP.appendCommand(["EXPIRE", logKey, logTTL], to: &buffer)
            logExpirySet = true
            n += 1
        }
        return n
    }
}

extension RequestStream {
    /// Appends the terminal write of this run (see `Scripts.terminal`): the
    /// pending lines, the log's expiry and the result, at most once per run token.
    func drainTerminal(into buffer: inout [UInt8], result: [UInt8], resultTTL: Int, runToken: String) -> Int {
        var payload: [UInt8] = []
        var lines: [[UInt8]] = []
        writer.takePending { p, starts in
            payload = Array(p)
            for (i, start) in starts.enumerated() {
                let end = i + 1 < starts.count ? starts[i + 1] : p.count
                lines.append(Array(p[start..<(end - 1)]))
            }
        }
        Scripts.appendEval(
            pubsub == .sharded ? Scripts.terminalSharded : Scripts.terminal, keys: [tokensKey, logKey, keysResult],
            args: [payload, Array(String(resultTTL).utf8), Array(logTTL.utf8), Array(runToken.utf8), result] + lines,
            to: &buffer)
        return 1
    }
}
