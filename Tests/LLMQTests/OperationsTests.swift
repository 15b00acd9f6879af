import Foundation
import Hummingbird
import LLMQ
import LLMQTestSupport
import ServiceLifecycle
import Synchronization
import Testing

/// Operations end to end, through real processes: /metrics scraped from a farm
/// after real jobs, /readyz through a drain, traces at an OTLP receiver, the
/// operator commands, and the Ops/ folder validated.
@Suite(.serialized) struct OperationsTests {
    static let secret = "sk-test-SECRET-0451"
    static let secretPrompt = "TOPSECRETPROMPT-7741"

    /// A farm configuration with /metrics on `httpPort` and two sim providers (the second for cooldowns).
    static func config(_ env: TestEnvironment, workers: Int, httpPort: Int, modes: [Mode: Int], routes: [String: [String]],
                       drainTimeout: Double = 10, extra: String = "", name: String = "ops.yaml") throws -> String {
        var text = """
            redis: \(env.redisURL)
            prefix: \(env.prefix)
            workers: \(workers)
            drain_timeout_s: \(drainTimeout)
            restart_backoff_s: 0.1
            retry_base_s: 0.05
            log_level: info
            log_format: json
            http_host: 127.0.0.1
            http_port: \(httpPort)
            modes:

            """
        for (m, c) in modes.sorted(by: { $0.key < $1.key }) { text += "  \(m): {concurrency: \(c)}\n" }
        text += "providers:\n"
        text += "  sim: {kind: sim, base_url: \"\(env.simURL)\", api_key_env: LLMQ_TEST_SECRET, timeout_s: 30, idle_timeout_s: 5}\n"
        text += "  sim2: {kind: sim, base_url: \"\(env.simURL)\", cooldown_s: 30}\n"
        text += "routes:\n"
        for (r, t) in routes.sorted(by: { $0.key < $1.key }) { text += "  \(r): [\(t.map { "\"\($0)\"" }.joined(separator: ", "))]\n" }
        text += extra
        let path = "\(env.dir)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        setenv("LLMQ_TEST_SECRET", secret, 1)
        return path
    }

    static func scrape(_ port: Int) throws -> MetricsScrape {
        guard let r = HTTPProbe.get(port: port, path: "/metrics"), r.status == 200 else {
            throw TestFailure("GET /metrics on port \(port) failed: \(String(describing: HTTPProbe.get(port: port, path: "/metrics")))")
        }
        return MetricsScrape(r.body)
    }

    /// Scrapes until `condition` holds, or fails showing the last scrape.
    @discardableResult
    static func scrapeUntil(_ port: Int, _ what: String, timeout: Double = 20, _ condition: (MetricsScrape) -> Bool) throws -> MetricsScrape {
        let end = Date().addingTimeInterval(timeout)
        var last: MetricsScrape?
        while Date() < end {
            if let r = HTTPProbe.get(port: port, path: "/metrics"), r.status == 200 {
                let s = MetricsScrape(r.body)
                if condition(s) { return s }
                last = s
            }
            usleep(100_000)
        }
        throw TestFailure("timed out after \(timeout) s waiting for \(what); last scrape:\n\(last?.text ?? "(none)")")
    }

    static func waitHTTP(_ port: Int, _ path: String, status: Int, timeout: Double = 20) throws -> HTTPProbe.Response {
        let end = Date().addingTimeInterval(timeout)
        var last: HTTPProbe.Response?
        while Date() < end {
            if let r = HTTPProbe.get(port: port, path: path) {
                if r.status == status { return r }
                last = r
            }
            usleep(50_000)
        }
        throw TestFailure("timed out after \(timeout) s waiting for GET \(path) to answer \(status); last: \(last.map(\.description) ?? "no answer")")
    }

    // MARK: metrics

    @Test func metricsFromARealFarmAfterJobsHaveTheRightValues() async throws {
        let env = try TestEnvironment("ops-metrics")
        let port = try FreePort.find()
        let config = try Self.config(env, workers: 2, httpPort: port, modes: ["chat": 2, "embed": 2], routes: [
            "fast": ["sim/sim:tokens=5"],
            "slow": ["sim/sim:tokens=60,delay_ms=80"],
            "long": ["sim/sim:tokens=400,delay_ms=20"],
            "limited": ["sim2/sim:fault=429,retry_after=20"],
            "fb": ["sim/sim:fault=500", "sim/sim:tokens=2"],
            "flaky": ["sim/sim:fail_times=1,key=ops-flaky,fault=503,tokens=3"],
        ])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        _ = try Self.waitHTTP(port, "/readyz", status: 200)
        try Self.scrapeUntil(port, "two live workers with their metrics") { s in
            s.sum("llmq_workers_live") == 2 && Set(s.series("llmq_permits_free").compactMap { $0.labels["worker"] }).count == 2
        }

        // Phase 1: more slow jobs than permits (2 workers × 2): the queue, in-flight and permit gauges.
        let slow = (0..<7).map { "slow-\($0)" }
        for id in slow {
            try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "slow", content: Self.secretPrompt))
        }
        var sawAge = false
        try Self.scrapeUntil(port, "3 pending and 4 in flight, permits all taken") { s in
            if (s.sum("llmq_queue_oldest_age_seconds", ["mode": "chat"]) ?? 0) > 0 { sawAge = true }
            return s.sum("llmq_queue_pending_jobs", ["mode": "chat"]) == 3 && s.sum("llmq_queue_inflight_jobs", ["mode": "chat"]) == 4
                && s.sum("llmq_queue_depth_jobs", ["mode": "chat"]) == 7
                && s.sum("llmq_inflight_jobs", ["mode": "chat"]) == 4 && s.sum("llmq_permits_free", ["mode": "chat"]) == 0
                && s.sum("llmq_permits_free", ["mode": "embed"]) == 4
        }
        try Self.scrapeUntil(port, "the next job's wait to show") { s in
            sawAge = sawAge || (s.sum("llmq_queue_oldest_age_seconds", ["mode": "chat"]) ?? 0) > 0
            return sawAge
        }
        try events.waitForTerminal(slow, timeout: 60)

        // Phase 2: one of each outcome.
        for i in 0..<3 { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "fast-\(i)", model: "fast")) }
        try redis.run("LPUSH", env.key("{embed}:queue"), #"{"id":"emb-1","model":"sim/sim:dim=4","input":"x"}"#)
        try redis.run("LPUSH", env.key("{chat}:queue"), "this is not json")
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "nowhere-1", model: "nowhere"))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "limited-1", model: "limited", extra: #","max_attempts":1"#))
        _ = try events.waitForTerminal(["limited-1"])
        try Self.scrapeUntil(port, "sim2 cooling down") { $0.sum("llmq_provider_cooldown_active", ["provider": "sim2"]) == 1 }
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "fb-1", model: "fb"))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "flaky-1", model: "flaky"))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "cancel-1", model: "long"))
        try events.wait(what: "cancel-1 streaming") { ($0["cancel-1"]?.count ?? 0) >= 3 }
        try redis.run("SET", env.key("{cancel-1}:cancel"), "1", "EX", "60")
        try redis.run("PUBLISH", env.key("cancel"), "cancel-1")
        let ids = ["fast-0", "fast-1", "fast-2", "emb-1", "nowhere-1", "limited-1", "fb-1", "flaky-1", "cancel-1"]
        let all = try events.waitForTerminal(ids, timeout: 60)
        #expect(all["cancel-1"]?.last?["code"] == "cancelled", "\(all["cancel-1"] ?? [])")
        #expect(all["limited-1"]?.last?["code"] == "rate_limited", "\(all["limited-1"] ?? [])")
        #expect(all["flaky-1"]?.last?.type == "done" && all["fb-1"]?.last?.type == "done", "\(all["flaky-1"] ?? []) \(all["fb-1"] ?? [])")
        // Burial follows the terminal write once Redis accepted it.
        try env.until("the three failed jobs buried") { try redis.run("LLEN", env.key("{chat}:dead")) == .int(3) }
        let deadInRedis = Double(try redis.run("LLEN", env.key("{chat}:dead")).int ?? -1)

        let s = try Self.scrapeUntil(port, "every request counted") { s in
            s.sum("llmq_requests_total", ["mode": "chat", "outcome": "done"]) == 12
                && s.sum("llmq_requests_total", ["mode": "embed", "outcome": "done"]) == 1
                && s.sum("llmq_requests_total", ["outcome": "cancelled"]) == 1
                && s.sum("llmq_dead_letter_jobs", ["mode": "chat"]) == deadInRedis
                // The queue sampler's last pass may predate the last acknowledgement.
                && s.sum("llmq_queue_pending_jobs", ["mode": "chat"]) == 0 && s.sum("llmq_queue_inflight_jobs", ["mode": "chat"]) == 0
        }
        let sampleWorkers = Set(try redis.run("ZRANGE", env.key("workers"), "0", "-1").array!.compactMap(\.string))
        #expect(sampleWorkers.count == 2)
        #expect(s.sum("llmq_requests_total", ["mode": "chat", "outcome": "unknown_model", "provider": "none"]) == 1)
        #expect(s.sum("llmq_requests_total", ["mode": "chat", "outcome": "rate_limited", "provider": "sim2"]) == 1)
        #expect(s.sum("llmq_requests_total", ["mode": "chat", "outcome": "done", "model": "sim:tokens=60,delay_ms=80"]) == 7)
        #expect(s.sum("llmq_tokens_out_total", ["mode": "chat"]) == 440, "7 × 60 + 3 × 5 + 3 + 2")
        #expect((s.sum("llmq_tokens_in_total", ["mode": "chat"]) ?? 0) > 0)
        #expect(s.sum("llmq_request_duration_seconds_count", ["mode": "chat"]) == 15, "12 done, unknown_model, rate_limited, cancelled")
        #expect(s.sum("llmq_request_duration_seconds_count", ["mode": "embed"]) == 1)
        #expect(s.sum("llmq_time_to_first_token_seconds_count", ["mode": "chat"]) == 12)
        #expect((s.sum("llmq_dispatch_seconds_count", ["mode": "chat"]) ?? 0) >= 12, "each job that reached a provider counts its dispatch")
        #expect((s.sum("llmq_request_duration_seconds_sum", ["mode": "chat"]) ?? 0) >= 7 * 60 * 0.08 * 0.9, "slow jobs take ~4.8 s each")
        #expect(s.sum("llmq_request_duration_seconds_bucket", ["mode": "chat", "le": "+Inf"]) == 15)
        #expect(s.sum("llmq_retries_total", ["mode": "chat"]) == 1)
        #expect(s.sum("llmq_fallbacks_total", ["mode": "chat", "provider": "sim"]) == 1)
        #expect(s.sum("llmq_cancellations_total", ["mode": "chat"]) == 1)
        #expect(s.sum("llmq_dead_lettered_total", ["mode": "chat"]) == deadInRedis)
        #expect(s.sum("llmq_dead_lettered_total", ["mode": "chat", "code": "invalid_job"]) == 1)
        #expect(s.sum("llmq_dead_lettered_total", ["mode": "chat", "code": "unknown_model"]) == 1)
        #expect(s.sum("llmq_provider_cooldowns_total", ["provider": "sim2"]) == 1)
        #expect(s.sum("llmq_queue_pending_jobs", ["mode": "chat"]) == 0 && s.sum("llmq_queue_inflight_jobs", ["mode": "chat"]) == 0)
        #expect(s.sum("llmq_permits_free", ["mode": "chat"]) == 4 && s.sum("llmq_inflight_jobs", ["mode": "chat"]) == 0)
        #expect(s.sum("llmq_worker_restarts_total") == 0 && s.series("llmq_worker_restarts_total").count == 2)
        #expect(s.sum("llmq_workers_live") == 2 && s.sum("llmq_ready") == 1)
        // Worker processes' series carry their id; each family has one TYPE line.
        for sample in s.series("llmq_requests_total") + s.series("llmq_permits_free") {
            #expect(sample.labels["worker"].map(sampleWorkers.contains) == true, "\(sample)")
        }
        #expect(s.series("llmq_queue_depth_jobs").allSatisfy { $0.labels["worker"] == nil })
        #expect(s.typeLines.values.allSatisfy { $0 == 1 }, "\(s.typeLines.filter { $0.value != 1 })")
        // Tenant families exist only on `schedule: fair` modes (SchedulingTests scrapes them).
        for family in MetricCatalog.families where family.name != "llmq_redis_reconnects_total" && family.name != "llmq_trace_spans_dropped_total"
            && !family.name.hasPrefix("llmq_tenant_")
        {
            #expect(s.types[family.name] == family.type, "\(family.name) missing or mistyped in the scrape")
        }

        // Redis drops every connection: the components reconnect, count it, and the farm keeps working.
        try redis.run("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "after-kill", model: "fast"))
        #expect(try events.waitForTerminal(["after-kill"])["after-kill"]?.last?.type == "done")
        let reconnected = try Self.scrapeUntil(port, "Redis reconnects counted") { ($0.sum("llmq_redis_reconnects_total") ?? 0) >= 1 }

        // The scrape has every metric the alert rules, the dashboard and KEDA use.
        let scrapeFile = "\(env.dir)/scrape.txt"
        try reconnected.text.write(toFile: scrapeFile, atomically: true, encoding: .utf8)
        let (status, out) = try OpsScript.run(["--only-metrics", "--metrics", scrapeFile], modules: ["yaml"])
        #expect(status == 0, "\(out)")
        #expect(out.contains(" 0 failed"), "\(out)")

        // A killed worker is restarted and counted under its slot.
        let children = TestEnvironment.children(of: farm.pid)
        #expect(children.count == 2)
        let victim = try #require(children.first)
        kill(victim, SIGKILL)
        let restarted = try Self.scrapeUntil(port, "the restart counted") { $0.sum("llmq_worker_restarts_total") == 1 }
        #expect(restarted.series("llmq_worker_restarts_total").filter { $0.value == 1 }.count == 1)

        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log().suffix(2000))")

        // Logs: JSON lines with the ids as fields; no API key, no prompt text.
        let log = env.log()
        #expect(!log.contains(Self.secret), "the API key appears in the log")
        #expect(!log.contains(Self.secretPrompt), "prompt text appears in the log")
        var withRequestID = 0
        for line in log.split(separator: "\n") where !line.isEmpty {
            guard let o = try? JSONValue.parse(Array(line.utf8)), o["level"] != nil, o["msg"] != nil else {
                Issue.record("not a JSON log line: \(line)")
                continue
            }
            if o["request_id"] != nil {
                withRequestID += 1
                #expect(o["worker"] != nil, "a request's log line without the worker: \(line)")
            }
        }
        #expect(withRequestID > 0, "no log line carried request_id")
    }

    // MARK: readiness

    @Test func readyzTurnsFalseAsSoonAsAFarmDrainsWhileMetricsStayUp() async throws {
        let env = try TestEnvironment("ops-ready")
        let port = try FreePort.find()
        let config = try Self.config(env, workers: 1, httpPort: port, modes: ["chat": 4], routes: ["slow": ["sim/sim:tokens=80,delay_ms=40"]],
                                     drainTimeout: 20)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        #expect(try Self.waitHTTP(port, "/readyz", status: 200).body == "ready\n")
        #expect(HTTPProbe.get(port: port, path: "/healthz")?.status == 200)
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "r-1", model: "slow"))
        try events.wait(what: "r-1 streaming") { ($0["r-1"]?.count ?? 0) >= 3 }

        farm.signal(SIGTERM)
        let r = try Self.waitHTTP(port, "/readyz", status: 503, timeout: 2)
        #expect(r.body.contains("draining"))
        let finishedEarly = events.events("r-1").contains { $0.isTerminal }
        #expect(!finishedEarly, "readiness flipped only after the job ended")
        #expect(farm.exitStatus == nil)
        #expect(HTTPProbe.get(port: port, path: "/healthz")?.status == 200, "liveness stays up through the drain")
        let during = try Self.scrape(port)
        #expect(during.sum("llmq_ready") == 0)
        #expect(during.sum("llmq_inflight_jobs", ["mode": "chat"]).map { $0 <= 1 } == true)

        let done = try events.waitForTerminal(["r-1"])
        #expect(done["r-1"]?.last?.type == "done", "the drain let the job finish")
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
        #expect(HTTPProbe.get(port: port, path: "/healthz") == nil, "the server stops with the farm")
    }

    @Test func aWorkerRunAloneServesItsOwnMetricsAndReadiness() async throws {
        let env = try TestEnvironment("ops-solo")
        let port = try FreePort.find()
        // The drain must outlast the 10 s slow job even on a loaded machine, or the job is put back instead of finishing.
        let config = try Self.config(env, workers: 1, httpPort: 0, modes: ["chat": 3], routes: [
            "fast": ["sim/sim:tokens=4"], "slow": ["sim/sim:tokens=250,delay_ms=40"],
        ], drainTimeout: 60)
        let events = try env.collector()
        let worker = try env.start(["worker", "--config", config, "--id", "solo-1", "--http-port", String(port)], log: "worker.log")
        _ = try Self.waitHTTP(port, "/readyz", status: 200)
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "s-1", model: "fast"))
        _ = try events.waitForTerminal(["s-1"])
        let s = try Self.scrapeUntil(port, "the worker's own metrics and the queue sampler's") { s in
            s.sum("llmq_requests_total", ["outcome": "done"]) == 1 && s.sum("llmq_permits_free", ["mode": "chat"]) == 3
                && s.sum("llmq_queue_depth_jobs", ["mode": "chat"]) == 0 && s.sum("llmq_workers_live") == 1
        }
        #expect(s.samples.allSatisfy { $0.labels["worker"] == nil }, "a worker alone labels nothing")

        // `llmq drain solo-1`: readiness turns false while it still finishes its job.
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "s-2", model: "slow"))
        try events.wait(what: "s-2 streaming") { ($0["s-2"]?.count ?? 0) >= 3 }
        let drain = try env.start(["drain", "--redis", env.redisURL, "--prefix", env.prefix, "solo-1"], log: "drain.log")
        #expect(ChildProcess.exitCode(try await env.waitExit(drain)) == 0, "\(env.log("drain.log"))")
        #expect(env.log("drain.log").contains("asked solo-1 to drain"))
        #expect(try redis.run("GET", env.key("control:solo-1")) == .string("drain"))
        let notReady = try Self.waitHTTP(port, "/readyz", status: 503, timeout: 5)
        #expect(notReady.body.contains("draining"))
        let s2Ended = events.events("s-2").contains { $0.isTerminal }
        #expect(!s2Ended)
        _ = try events.waitForTerminal(["s-2"])
        #expect(events.events("s-2").last?.type == "done")

        // SIGTERM drains and stops it.
        worker.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(worker)) == 0, "\(env.log("worker.log").suffix(1500))")

        // Redis gone: a fresh worker's /readyz says so while /healthz still answers.
        try redis.run("DEL", env.key("control:solo-2"))
        let port2 = try FreePort.find()
        let second = try env.start(["worker", "--config", config, "--id", "solo-2", "--http-port", String(port2)], log: "worker2.log")
        _ = try Self.waitHTTP(port2, "/readyz", status: 200)
        env.redis.process.signal(SIGKILL)
        let down = try Self.waitHTTP(port2, "/readyz", status: 503, timeout: 10)
        #expect(down.body.contains("redis unreachable"), "\(down)")
        #expect(HTTPProbe.get(port: port2, path: "/healthz")?.status == 200)
        second.signal(SIGKILL)
    }

    @Test func aPortInUseStopsStartUpWithAMessageInsteadOfAFarmWithoutEndpoints() async throws {
        let env = try TestEnvironment("ops-port")
        let port = try FreePort.find()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        #expect(bound && listen(fd, 1) == 0)
        let config = try Self.config(env, workers: 1, httpPort: port, modes: ["chat": 1], routes: [:])
        let farm = try env.start(["farm", "--config", config])
        let status = try await env.waitExit(farm, timeout: 10)
        #expect(ChildProcess.exitCode(status) == 1, "\(env.log())")
        #expect(env.log().contains("cannot listen on 127.0.0.1:\(port)") && env.log().contains("http_port"), "\(env.log())")
        #expect(try env.client().run("ZCARD", env.key("workers")) == .int(0), "no worker started")
    }

    // MARK: tracing

    @Test func aJobsTraceReachesAnOTLPReceiverUnderTheProducersSpan() async throws {
        let receiver = OTLPReceiver()
        let receiverPort = try await receiver.start()
        defer { receiver.stop() }
        let env = try TestEnvironment("ops-trace")
        let config = try Self.config(env, workers: 1, httpPort: 0, modes: ["chat": 4], routes: [
            "fast": ["sim/sim:tokens=6,delay_ms=5,first_ms=30"], "fb": ["sim/sim:fault=500", "sim/sim:tokens=2"],
        ], extra: "tracing: {otlp_endpoint: \"http://127.0.0.1:\(receiverPort)\", service_name: llmq-test}\n")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let traceID = "0af7651916cd43dd8448eb211c80319c"
        let parent = "b7ad6b7169203331"
        let enqueuedAt = Clock.unixTime() - 1.5
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(
            id: "t-1", model: "fast", extra: #","traceparent":"00-\#(traceID)-\#(parent)-01","metadata":{"enqueued_at":\#(enqueuedAt)}"#))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(
            id: "t-2", model: "fast", extra: #","traceparent":"00-11111111111111111111111111111111-2222222222222222-00""#))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "t-3", model: "fb"))
        _ = try events.waitForTerminal(["t-1", "t-2", "t-3"])

        let spans = try receiver.waitForSpans(timeout: 15, what: "the spans of t-1 and t-3") { spans in
            spans.contains { $0["name"] == "llmq.job" && $0.attribute("llmq.request_id") == "t-1" }
                && spans.filter { $0.attribute("llmq.request_id") == "t-3" || $0["name"] == "llmq.provider" }.count >= 3
        }
        let job = try #require(spans.first { $0["name"] == "llmq.job" && $0.attribute("llmq.request_id") == "t-1" })
        #expect(job["traceId"]?.stringValue == traceID && job["parentSpanId"]?.stringValue == parent, "\(job)")
        #expect(job["kind"] == 5)
        #expect(job.attribute("llmq.outcome") == "done" && job.attribute("gen_ai.system") == "sim")
        #expect(job.attribute("gen_ai.usage.output_tokens") == "6")
        #expect(job.events.contains("first_token"), "\(job)")
        let jobSpanID = try #require(job["spanId"]?.stringValue)
        let start = Double(job["startTimeUnixNano"]?.stringValue ?? "0")! / 1e9
        #expect(abs(start - enqueuedAt) < 0.01, "the job span starts when the job was queued")
        let wait = try #require(spans.first { $0["name"] == "llmq.queue_wait" && $0["parentSpanId"]?.stringValue == jobSpanID })
        let waited = (Double(wait["endTimeUnixNano"]?.stringValue ?? "0")! - Double(wait["startTimeUnixNano"]?.stringValue ?? "0")!) / 1e9
        #expect(waited >= 1.4 && waited < 10, "queue wait \(waited) s")
        let call = try #require(spans.first { $0["name"] == "llmq.provider" && $0["parentSpanId"]?.stringValue == jobSpanID })
        #expect(call["kind"] == 3 && call["traceId"]?.stringValue == traceID)
        #expect(call.attribute("http.response.status_code") == "200" && call.events.contains("first_token"), "\(call)")

        // Not sampled by the producer: nothing exported for its trace.
        #expect(!spans.contains { $0["traceId"]?.stringValue == "11111111111111111111111111111111" })
        // Without a traceparent: a new trace, the failed first target as an error span, then the fallback.
        let t3 = try #require(spans.first { $0["name"] == "llmq.job" && $0.attribute("llmq.request_id") == "t-3" })
        #expect(t3["parentSpanId"] == nil && t3["traceId"]?.stringValue != traceID)
        let t3Calls = spans.filter { $0["name"] == "llmq.provider" && $0["parentSpanId"] == t3["spanId"] }
        #expect(t3Calls.count == 2, "\(t3Calls)")
        #expect(t3Calls.contains { $0["status"]?["code"] == 2 && $0.attribute("http.response.status_code") == "500" })
        #expect(receiver.resources.contains { $0["service.name"] == "llmq-test" })

        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    // MARK: operator commands

    @Test func statsDeadLettersAndDrainFromTheCommandLine() async throws {
        let env = try TestEnvironment("ops-cli")
        let config = try Self.config(env, workers: 1, httpPort: 0, modes: ["chat": 2], routes: [
            "slow": ["sim/sim:tokens=200,delay_ms=30"], "flaky": ["sim/sim:fail_times=3,key=ops-cli,fault=500,tokens=2"],
        ])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let client = ["--redis", env.redisURL, "--prefix", env.prefix]
        func llmq(_ args: [String], _ log: String) async throws -> (Int32?, String) {
            let p = try env.start(args + client, log: log)
            let status = ChildProcess.exitCode(try await env.waitExit(p))
            return (status, env.log(log))
        }
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "c-slow", model: "slow"))
        try redis.run("LPUSH", env.key("{chat}:queue"), "{broken")
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "c-flaky", model: "flaky"))
        try events.wait(what: "c-slow streaming and c-flaky dead") { m in
            (m["c-slow"]?.count ?? 0) >= 3 && m["c-flaky"]?.contains(where: \.isTerminal) == true
        }
        try env.until("two dead entries") { try redis.run("LLEN", env.key("{chat}:dead")) == .int(2) }

        let (s1, statsJSON) = try await llmq(["stats", "--json"], "stats.json")
        #expect(s1 == 0, "\(statsJSON)")
        let stats = try JSONValue.parse(Array(statsJSON.utf8))
        let chat = stats["modes"]?.arrayValue?.first { $0["mode"] == "chat" }
        #expect(chat?["inflight"] == 1 && chat?["dead"] == 2 && chat?["pending"] == 0, "\(statsJSON)")
        let worker = stats["workers"]?.arrayValue?.first
        #expect(worker?["state"] == "running" && worker?["inflight"]?["chat"] == 1, "\(statsJSON)")
        #expect((worker?["heartbeat_age_s"]?.doubleValue ?? 99) < 3)
        #expect(stats["inflight_jobs"]?.arrayValue?.first?["id"] == "c-slow" && stats["dead_total"] == 2)
        let (s2, statsText) = try await llmq(["stats"], "stats.txt")
        #expect(s2 == 0 && statsText.contains("WORKERS: 1 live") && statsText.contains("c-slow") && statsText.contains("DEAD LETTERS: 2"), "\(statsText)")

        let (s3, list) = try await llmq(["dead", "list", "--mode", "chat"], "dead-list.txt")
        #expect(s3 == 0 && list.contains("c-flaky") && list.contains("invalid_job") && list.contains("upstream_error"), "\(list)")
        let (s4, listJSON) = try await llmq(["dead", "list", "--json"], "dead-list.json")
        let entries = listJSON.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8)) }
        #expect(s4 == 0 && entries.count == 2, "\(listJSON)")

        // Retry --all skips the malformed job; the flaky one's fourth request succeeds.
        let (s5, retried) = try await llmq(["dead", "retry", "--all"], "dead-retry.txt")
        #expect(s5 == 0 && retried.contains("1 queued again, 1 skipped"), "\(retried)")
        try events.wait(what: "c-flaky done after the retry") { $0["c-flaky"]?.last?.type == "done" }
        #expect(try redis.run("LLEN", env.key("{chat}:dead")) == .int(1))
        let (s6, refused) = try await llmq(["dead", "purge"], "dead-purge-refused.txt")
        #expect(s6 != 0 && refused.contains("--all"), "\(refused)")
        let (s7, purged) = try await llmq(["dead", "purge", "--all"], "dead-purge.txt")
        #expect(s7 == 0 && purged.contains("1 dead job deleted"), "\(purged)")
        #expect(try redis.run("LLEN", env.key("{chat}:dead")) == .int(0))

        let (s8, drained) = try await llmq(["drain", "--all"], "drain.txt")
        let ids = try redis.run("ZRANGE", env.key("workers"), "0", "-1").array!.compactMap(\.string)
        #expect(s8 == 0 && ids.count == 1 && drained.contains("asked \(ids[0]) to drain"), "\(drained)")
        let ttl = try redis.run("TTL", env.key("control:\(ids[0])")).int ?? -1
        #expect(ttl > 0 && ttl <= 600)
        farm.signal(SIGTERM)
        _ = try events.waitForTerminal(["c-slow"])
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    // MARK: Ops/

    @Test func opsFolderValidates() async throws {
        let dump = NSTemporaryDirectory() + "llmq-ops-configs-\(UUID().uuidString.prefix(6))"
        let (status, out) = try OpsScript.run(
            ["--require-all", "--llmq", try TestEnvironment.binary(), "--dump-configs", dump], modules: ["yaml", "jsonschema", "kubernetes_validate"])
        #expect(status == 0, "\(out)")
        #expect(out.contains(" 0 failed"), "\(out)")
        // The configurations shipped in Ops/ load with llmq's own loader.
        var files = ["\(TestEnvironment.packageRoot)/Ops/config/farm.yaml", "\(TestEnvironment.packageRoot)/Ops/compose/farm.yaml"]
        files += try FileManager.default.contentsOfDirectory(atPath: dump).sorted().map { "\(dump)/\($0)" }
        #expect(files.count == 6, "\(files)")  // farm, compose, and the ConfigMap's chat, complete, embed, gateway
        for f in files {
            do {
                let c = try ConfigLoader.load(path: f, environment: [:])
                #expect(c.drainTimeoutS > 0 && !c.modes.isEmpty)
            } catch {
                Issue.record("\(f): \(error)")
            }
        }
    }

    @Test func readmeDocumentsEveryMetric() throws {
        let readme = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/README.md", encoding: .utf8)
        let missing = MetricCatalog.families.map(\.name).filter { !readme.contains("`\($0)`") }
        #expect(missing.isEmpty, "README's metrics table lacks \(missing)")
    }
}

/// Runs Ops/validate.py with a python3 that has the modules it needs.
enum OpsScript {
    static func run(_ args: [String], modules: [String]) throws -> (Int32?, String) {
        let probe = "import " + modules.joined(separator: ", ")
        let candidates = ["python3", "/usr/bin/python3", "/usr/local/bin/python3"].compactMap(ChildProcess.which)
        let python = candidates.first { p in
            guard let c = try? ChildProcess([p, "-c", probe]) else { return false }
            while c.exitStatus == nil { usleep(5000) }
            return ChildProcess.exitCode(c.exitStatus!) == 0
        }
        guard let python else {
            throw TestFailure("no python3 with \(modules.joined(separator: ", ")); install python3-yaml python3-jsonschema (apt) and kubernetes-validate (pip)")
        }
        let out = NSTemporaryDirectory() + "llmq-ops-\(UUID().uuidString.prefix(8)).out"
        let p = try ChildProcess([python, "\(TestEnvironment.packageRoot)/Ops/validate.py"] + args, stdout: out, stderr: out)
        let end = Date().addingTimeInterval(120)
        while p.exitStatus == nil && Date() < end { usleep(10_000) }
        guard let s = p.exitStatus else { throw TestFailure("Ops/validate.py did not finish within 120 s") }
        return (ChildProcess.exitCode(s), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}

extension JSONValue {
    /// An OTLP span attribute's value as text.
    func attribute(_ key: String) -> String? {
        guard let a = self["attributes"]?.arrayValue?.first(where: { $0["key"]?.stringValue == key })?["value"] else { return nil }
        if let s = a["stringValue"]?.stringValue { return s }
        if let s = a["intValue"]?.stringValue { return s }
        if let d = a["doubleValue"]?.doubleValue { return String(d) }
        if let b = a["boolValue"]?.boolValue { return String(b) }
        return nil
    }

    var events: [String] { self["events"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [] }
}

/// A local OTLP/HTTP receiver: records the spans POSTed to /v1/traces as JSON.
final class OTLPReceiver: Sendable {
    private let state = Mutex<(spans: [JSONValue], resources: [[String: String]], posts: Int)>(([], [], 0))
    private let group = Mutex<ServiceGroup?>(nil)

    var resources: [[String: String]] { state.withLock { $0.resources } }

    func start() async throws -> Int {
        let router = Router()
        router.post("v1/traces") { [self] request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            self.record(try JSONValue.parse(Array(buffer: body)))
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        let (ports, portIn) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { portIn.yield($0.localAddress?.port ?? 0) })
        let g = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: .init(label: "otlp-receiver"))
        group.withLock { $0 = g }
        Task { try await g.run() }
        var it = ports.makeAsyncIterator()
        guard let port = await it.next(), port > 0 else { throw TestFailure("the OTLP receiver did not start") }
        return port
    }

    private func record(_ doc: JSONValue) {
        state.withLock { s in
            s.posts += 1
            for rs in doc["resourceSpans"]?.arrayValue ?? [] {
                var res: [String: String] = [:]
                for a in rs["resource"]?["attributes"]?.arrayValue ?? [] {
                    if let k = a["key"]?.stringValue { res[k] = a["value"]?["stringValue"]?.stringValue }
                }
                s.resources.append(res)
                for ss in rs["scopeSpans"]?.arrayValue ?? [] { s.spans += ss["spans"]?.arrayValue ?? [] }
            }
        }
    }

    func stop() {
        if let g = group.withLock({ $0 }) { Task { await g.triggerGracefulShutdown() } }
    }

    func waitForSpans(timeout: Double, what: String, _ condition: ([JSONValue]) -> Bool) throws -> [JSONValue] {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            let spans = state.withLock { $0.spans }
            if condition(spans) { return spans }
            usleep(50_000)
        }
        let s = state.withLock { $0 }
        throw TestFailure("timed out after \(timeout) s waiting for \(what); \(s.posts) posts, spans: \(s.spans.map { "\($0["name"] ?? .null) \($0.attribute("llmq.request_id") ?? "")" })")
    }
}
