import LLMQ
import LLMQTestSupport
import Testing

@Suite struct TelemetryTests {
    @Test func mergeLabelsEachWorkersSeriesAndKeepsOneHelpAndTypePerFamily() {
        let own = """
            # TYPE llmq_worker_restarts_total counter
            llmq_worker_restarts_total{slot="0"} 1
            # TYPE llmq_workers_live gauge
            llmq_workers_live 2.0

            """
        let worker = """
            # TYPE llmq_requests_total counter
            llmq_requests_total{mode="chat",outcome="done"} 3
            # TYPE llmq_request_duration_seconds histogram
            llmq_request_duration_seconds_bucket{mode="chat",le="+Inf"} 3
            llmq_request_duration_seconds_sum{mode="chat"} 1.5
            llmq_request_duration_seconds_count{mode="chat"} 3
            # TYPE llmq_ready gauge
            llmq_ready 1.0

            """
        let other = "# TYPE llmq_requests_total counter\nllmq_requests_total{mode=\"chat\",outcome=\"done\"} 4\n"
        let text = String(decoding: MetricsExposition.merge([
            .init(worker: nil, text: Array(own.utf8)), .init(worker: "host-0", text: Array(worker.utf8)),
            .init(worker: "we\"ird", text: Array(other.utf8)),
        ]), as: UTF8.self)
        let s = MetricsScrape(text)
        #expect(s.typeLines.values.allSatisfy { $0 == 1 }, "\(text)")
        #expect(text.contains("# HELP llmq_requests_total Requests that ended"), "\(text)")
        #expect(s.sum("llmq_requests_total") == 7)
        #expect(s.sum("llmq_requests_total", ["worker": "host-0"]) == 3)
        #expect(s.sum("llmq_requests_total", ["worker": "we\"ird"]) == 4, "label values are escaped: \(text)")
        #expect(text.contains("llmq_ready{worker=\"host-0\"} 1.0"), "unlabelled series get the worker label: \(text)")
        #expect(s.sum("llmq_request_duration_seconds_count", ["worker": "host-0"]) == 3)
        #expect(s.types["llmq_request_duration_seconds"] == "histogram")
        #expect(s.series("llmq_worker_restarts_total").first?.labels == ["slot": "0"], "the process's own series stay as they are")
        let order = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE") }.map { String($0.split(separator: " ")[2]) }
        #expect(order == order.sorted())
    }

    @Test func traceparentParsing() {
        let t = TraceContext(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(t?.traceID == "0af7651916cd43dd8448eb211c80319c" && t?.spanID == "b7ad6b7169203331" && t?.sampled == true)
        #expect(t?.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(TraceContext(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")?.sampled == false)
        // A later version may append fields.
        #expect(TraceContext(traceparent: "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra") != nil)
        for bad in [
            "", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
        ] {
            #expect(TraceContext(traceparent: bad) == nil, "\(bad)")
        }
        let id = TraceContext.newTraceID(), span = TraceContext.newSpanID()
        #expect(id.count == 32 && span.count == 16 && TraceContext(traceparent: "00-\(id)-\(span)-01") != nil)
    }

    @Test func tracingConfigIsCheckedAndOffByDefault() throws {
        #expect(FarmConfig().tracing.isEnabled == false)
        #expect(FarmConfig().httpPort == 9464)
        var c = FarmConfig()
        c.tracing.otlpEndpoint = "collector:4318"
        #expect(throws: LLMQError.self) { try ConfigLoader.validate(c, source: "test") }
        c.tracing.otlpEndpoint = "http://collector:4318"
        try ConfigLoader.validate(c, source: "test")
        c.httpPort = 70000
        #expect(throws: LLMQError.self) { try ConfigLoader.validate(c, source: "test") }
    }
}
