import Foundation
import Logging
import ServiceLifecycle
import Tracing

/// Sends finished spans to an OTLP/HTTP receiver as JSON (`POST
/// ENDPOINT/v1/traces`, `Content-Type: application/json`), in batches, from a
/// thread of its own through a `BlockingHTTPClient` (the HTTP layer's libcurl). Spans wait in a
/// bounded buffer; when the receiver is slow or down, the oldest work is
/// dropped and counted (`llmq_trace_spans_dropped_total`) rather than held.
///
/// Why not swift-otel: it brings gRPC, SwiftNIO and protobuf into the build
/// (about 7 minutes on 2 cores against seconds for this file), while
/// OTLP/HTTP+JSON needs only the libcurl llmq already links.
///
/// Thread rules: `enqueue`, `flushSoon` and `run` from anywhere; the HTTP client
/// only on the export thread; the buffer is guarded by `condition`.
public final class OTLPExporter: Service, @unchecked Sendable {  // buffer and flags guarded by `condition`
    public struct FinishedSpan: Sendable {
        var name: String
        var kind: SpanKind
        var trace: TraceContext
        var parentSpanID: String?
        var start: UInt64
        var end: UInt64
        var attributes: SpanAttributes
        var events: [SpanEvent]
        var status: SpanStatus?
    }

    let url: String
    let config: TracingConfig
    let logger: Logger
    let resource: [String: String]
    static let maxQueued = 8192
    static let batchSize = 512

    private let condition = NSCondition()
    private var buffer: [FinishedSpan] = []
    private var stopping = false
    private var flushRequested = false
    private var lastFailureLog = 0.0

    public init(config: TracingConfig, resource: [String: String] = [:], logger: Logger) {
        self.config = config
        let base = config.otlpEndpoint ?? ""
        url = base.hasSuffix("/v1/traces") ? base : (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/v1/traces"
        var r = resource
        r["service.name"] = config.serviceName
        self.resource = r
        self.logger = logger
    }

    func enqueue(_ span: FinishedSpan) {
        condition.lock()
        var dropped = 0
        if buffer.count >= Self.maxQueued {
            buffer.removeFirst()
            dropped = 1
        }
        buffer.append(span)
        if buffer.count >= Self.batchSize { condition.signal() }
        condition.unlock()
        if dropped > 0 { FarmMetrics.spansDropped(reason: "queue_full", count: dropped) }
    }

    func flushSoon() {
        condition.lock()
        flushRequested = true
        condition.signal()
        condition.unlock()
    }

    /// Exports every second until cancelled or shut down, then sends what is left.
    public func run() async throws {
        await runOnThread(named: "llmq-otlp", loop: { self.loop() }, stop: { self.requestStop() })
    }

    private func requestStop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        let client = BlockingHTTPClient()
        while true {
            condition.lock()
            let deadline = Date().addingTimeInterval(1)
            while buffer.count < Self.batchSize && !stopping && !flushRequested {
                if !condition.wait(until: deadline) { break }
            }
            flushRequested = false
            let batch = Array(buffer.prefix(Self.batchSize))
            buffer.removeFirst(batch.count)
            let more = !buffer.isEmpty
            let stop = stopping
            condition.unlock()
            if !batch.isEmpty { post(batch, client) }
            if stop && !more { return }
        }
    }

    private func post(_ spans: [FinishedSpan], _ client: BlockingHTTPClient) {
        let request = HTTPRequest(
            url: url, headers: ["Content-Type: application/json"] + config.headers.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" },
            body: Self.encode(spans, resource: resource), timeout: config.timeoutS, connectTimeout: min(config.timeoutS, 2))
        let result = client.perform(request)
        guard !(result.completed && result.isHTTPSuccess) else { return }
        FarmMetrics.spansDropped(reason: "export_failed", count: spans.count)
        let now = Clock.unixTime()
        if now - lastFailureLog > 60 {
            lastFailureLog = now
            let why = result.transportFailure != nil ? result.curlMessage : "HTTP \(result.status)"
            logger.warning("cannot export spans to the OTLP endpoint; dropping them (logged once a minute)",
                           metadata: ["endpoint": "\(url)", "error": "\(why)", "spans": "\(spans.count)"])
        }
    }

    // MARK: OTLP JSON

    static func encode(_ spans: [FinishedSpan], resource: [String: String]) -> [UInt8] {
        let otlpSpans: [JSONValue] = spans.map { s in
            var o: [String: JSONValue] = [
                "traceId": .string(s.trace.traceID), "spanId": .string(s.trace.spanID), "name": .string(s.name),
                "kind": .int(kindNumber(s.kind)),
                "startTimeUnixNano": .string(String(s.start)), "endTimeUnixNano": .string(String(max(s.end, s.start))),
                "attributes": attributes(s.attributes),
                "events": .array(s.events.map { e in
                    ["name": .string(e.name), "timeUnixNano": .string(String(e.nanosecondsSinceEpoch)), "attributes": attributes(e.attributes)]
                }),
            ]
            if let p = s.parentSpanID { o["parentSpanId"] = .string(p) }
            if let st = s.status {
                var so: [String: JSONValue] = ["code": .int(st.code == .ok ? 1 : 2)]
                if let m = st.message { so["message"] = .string(m) }
                o["status"] = .object(so)
            }
            return .object(o)
        }
        let res: [JSONValue] = resource.sorted { $0.key < $1.key }.map { ["key": .string($0.key), "value": ["stringValue": .string($0.value)]] }
        let doc: JSONValue = [
            "resourceSpans": [[
                "resource": ["attributes": .array(res)],
                "scopeSpans": [["scope": ["name": "llmq"], "spans": .array(otlpSpans)]],
            ]],
        ]
        return doc.jsonBytes
    }

    static func kindNumber(_ k: SpanKind) -> Int {
        switch k {
        case .internal: 1
        case .server: 2
        case .client: 3
        case .producer: 4
        case .consumer: 5
        }
    }

    static func attributes(_ a: SpanAttributes) -> JSONValue {
        var out: [JSONValue] = []
        a.forEach { key, value in out.append(["key": .string(key), "value": anyValue(value)]) }
        out.sort { ($0["key"]?.stringValue ?? "") < ($1["key"]?.stringValue ?? "") }
        return .array(out)
    }

    static func anyValue(_ v: SpanAttribute) -> JSONValue {
        switch v {
        case .int32(let i): ["intValue": .string(String(i))]
        case .int64(let i): ["intValue": .string(String(i))]
        case .double(let d): ["doubleValue": .double(d)]
        case .bool(let b): ["boolValue": .bool(b)]
        case .string(let s): ["stringValue": .string(s)]
        case .int32Array(let a): ["arrayValue": ["values": .array(a.map { ["intValue": .string(String($0))] })]]
        case .int64Array(let a): ["arrayValue": ["values": .array(a.map { ["intValue": .string(String($0))] })]]
        case .doubleArray(let a): ["arrayValue": ["values": .array(a.map { ["doubleValue": .double($0)] })]]
        case .boolArray(let a): ["arrayValue": ["values": .array(a.map { ["boolValue": .bool($0)] })]]
        case .stringArray(let a): ["arrayValue": ["values": .array(a.map { ["stringValue": .string($0)] })]]
        case .stringConvertible(let c): ["stringValue": .string(c.description)]
        default: ["stringValue": .string("\(v)")]
        }
    }
}
