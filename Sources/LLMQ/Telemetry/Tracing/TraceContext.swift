import Tracing

/// A W3C trace context (`traceparent`): which trace a span belongs to, its own
/// id, and whether the trace is sampled.
public struct TraceContext: Sendable, Hashable {
    /// 32 lowercase hex digits.
    public var traceID: String
    /// 16 lowercase hex digits.
    public var spanID: String
    public var sampled: Bool

    public init(traceID: String, spanID: String, sampled: Bool) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
    }

    /// Parses `VERSION-TRACEID-SPANID-FLAGS`; nil when it is not a valid traceparent.
    public init?(traceparent: String) {
        let u = Array(traceparent.utf8)
        guard u.count >= 55, u[2] == 0x2D, u[35] == 0x2D, u[52] == 0x2D else { return nil }
        let version = String(decoding: u[0..<2], as: UTF8.self)
        guard Self.isHex(u[0..<2]), version != "ff", version != "00" || u.count == 55, u.count == 55 || u[55] == 0x2D else { return nil }
        // A later version may append fields; they are kept to visible ASCII (and 512 bytes), since a job's
        // traceparent becomes a header of a request carrying the provider's key: no CR/LF, NUL or spaces.
        guard u.count <= 512, u[55...].allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else { return nil }
        let trace = u[3..<35], span = u[36..<52], flags = u[53..<55]
        guard Self.isHex(trace), Self.isHex(span), Self.isHex(flags),
              trace.contains(where: { $0 != 0x30 }), span.contains(where: { $0 != 0x30 }),
              let f = UInt8(String(decoding: flags, as: UTF8.self), radix: 16) else { return nil }
        traceID = String(decoding: trace, as: UTF8.self)
        spanID = String(decoding: span, as: UTF8.self)
        sampled = f & 1 == 1
    }

    public var traceparent: String { "00-\(traceID)-\(spanID)-\(sampled ? "01" : "00")" }

    static func isHex(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    static func randomHex(bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        while true {
            var s = ""
            for _ in 0..<(bytes / 8) {
                let v = g.next() as UInt64
                let h = String(v, radix: 16)
                s += String(repeating: "0", count: 16 - h.count) + h
            }
            if s.contains(where: { $0 != "0" }) { return s }
        }
    }

    public static func newTraceID() -> String { randomHex(bytes: 16) }
    public static func newSpanID() -> String { randomHex(bytes: 8) }
}

enum TraceContextKey: InstrumentationContextKey {
    typealias Value = TraceContext
    static var nameOverride: String? { "llmq-trace-context" }
}

extension InstrumentationContext {
    /// The span this context belongs to, or the remote parent extracted from a traceparent.
    public var traceContext: TraceContext? {
        get { self[TraceContextKey.self] }
        set { self[TraceContextKey.self] = newValue }
    }
}

/// Reads `traceparent` from a dictionary of header-like fields.
public struct TraceparentExtractor: Extractor {
    public init() {}
    public func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}

/// Writes `traceparent` into a dictionary of header-like fields.
public struct TraceparentInjector: Injector {
    public init() {}
    public func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}

/// A point in wall-clock time, for spans whose start was measured on the monotonic clock.
public struct WallInstant: TracerInstant {
    public var nanosecondsSinceEpoch: UInt64

    public init(nanosecondsSinceEpoch: UInt64) { self.nanosecondsSinceEpoch = nanosecondsSinceEpoch }

    /// The wall-clock time of a `Clock.nowNanos()` reading.
    public init(monotonic: UInt64) {
        let nowWall = UInt64(Clock.unixTime() * 1e9)
        let nowMono = Clock.nowNanos()
        nanosecondsSinceEpoch = nowWall &- (nowMono &- monotonic)
    }

    public static func < (a: WallInstant, b: WallInstant) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }
}
