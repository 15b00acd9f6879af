import Synchronization
import Tracing

/// A swift-distributed-tracing `Tracer` that propagates W3C trace context and
/// hands finished, sampled spans to an `OTLPExporter`. The executable
/// bootstraps it when `tracing.otlp_endpoint` is set; otherwise the library's
/// spans go to the no-op tracer and cost next to nothing.
public struct OTLPTracer: Tracer {
    let exporter: OTLPExporter
    let sampleRatio: Double

    public init(exporter: OTLPExporter, sampleRatio: Double = 1) {
        self.exporter = exporter
        self.sampleRatio = sampleRatio
    }

    public func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> InstrumentationContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> OTLPSpan {
        var context = context()
        let own: TraceContext
        let parent = context.traceContext
        if let parent {
            own = TraceContext(traceID: parent.traceID, spanID: TraceContext.newSpanID(), sampled: parent.sampled)
        } else {
            let sampled = sampleRatio >= 1 || Double.random(in: 0..<1) < sampleRatio
            own = TraceContext(traceID: TraceContext.newTraceID(), spanID: TraceContext.newSpanID(), sampled: sampled)
        }
        context.traceContext = own
        return OTLPSpan(
            name: operationName, kind: kind, context: context, trace: own, parentSpanID: parent?.spanID,
            start: instant().nanosecondsSinceEpoch, exporter: own.sampled ? exporter : nil)
    }

    public func forceFlush() { exporter.flushSoon() }

    public func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout InstrumentationContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        if let tp = extractor.extract(key: "traceparent", from: carrier), let parsed = TraceContext(traceparent: tp) {
            context.traceContext = parsed
        }
    }

    public func inject<Carrier, Inject: Injector>(_ context: InstrumentationContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        if let t = context.traceContext { injector.inject(t.traceparent, forKey: "traceparent", into: &carrier) }
    }
}

/// One span; ends once, then goes to the exporter when its trace is sampled.
///
/// Thread rules: any thread; mutable state guarded by `state`.
public final class OTLPSpan: Span {
    struct State {
        var name: String
        var attributes = SpanAttributes()
        var events: [SpanEvent] = []
        var status: SpanStatus?
        var ended = false
    }

    public let context: InstrumentationContext
    let trace: TraceContext
    let parentSpanID: String?
    let kind: SpanKind
    let start: UInt64
    let exporter: OTLPExporter?
    private let state: Mutex<State>

    init(name: String, kind: SpanKind, context: InstrumentationContext, trace: TraceContext, parentSpanID: String?,
         start: UInt64, exporter: OTLPExporter?) {
        self.context = context
        self.trace = trace
        self.parentSpanID = parentSpanID
        self.kind = kind
        self.start = start
        self.exporter = exporter
        state = Mutex(State(name: name))
    }

    public var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }

    public var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }

    public var isRecording: Bool { exporter != nil && !state.withLock { $0.ended } }

    public func setStatus(_ status: SpanStatus) { state.withLock { $0.status = status } }

    public func addEvent(_ event: SpanEvent) { state.withLock { $0.events.append(event) } }

    public func recordError<Instant: TracerInstant>(_ error: Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        var a = attributes
        a["exception.type"] = "\(type(of: error))"
        a["exception.message"] = "\(error)"
        addEvent(SpanEvent(name: "exception", at: instant(), attributes: a))
    }

    public func addLink(_ link: SpanLink) {}

    public func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        let finished = state.withLock { s -> State? in
            if s.ended { return nil }
            s.ended = true
            return s
        }
        guard let finished, let exporter else { return }
        exporter.enqueue(OTLPExporter.FinishedSpan(
            name: finished.name, kind: kind, trace: trace, parentSpanID: parentSpanID, start: start,
            end: instant().nanosecondsSinceEpoch, attributes: finished.attributes, events: finished.events, status: finished.status))
    }
}
