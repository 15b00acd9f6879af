import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// End to end through real processes: redis-server, `llmq sim`, `llmq farm`,
/// jobs pushed and events read by a plain hiredis client.
@Suite(.serialized) struct FarmTests {
    @Test func chatJobStreamsEveryEventInOrderToChannelLogAndResult() async throws {
        let env = try TestEnvironment("chat")
        let config = try env.writeConfig(workers: 1, routes: ["fast": ["sim/sim:tokens=12,delay_ms=2"]])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "req-42", model: "fast", extra: #","metadata":{"tenant":"acme"}"#))

        let seen = try events.waitForTerminal(["req-42"])["req-42"]!
        #expect(seen.map(\.type) == ["start"] + Array(repeating: "chunk", count: 12) + ["done"], "\(seen)")
        #expect(seen.map(\.seq) == Array(0...13).map { Optional($0) })
        let start = seen[0]
        #expect(start["attempt"] == 1 && start["provider"] == "sim" && start["model"] == "sim:tokens=12,delay_ms=2")
        #expect(start["metadata"] == ["tenant": "acme"])
        #expect(start["worker"]?.stringValue?.hasSuffix("-0") == true)
        let done = seen.last!
        #expect(done["finish_reason"] == "stop")
        #expect(done["usage"]?["completion_tokens"] == 12)
        #expect((done["usage"]?["prompt_tokens"]?.intValue ?? 0) > 0)
        #expect((done["ttft_ms"]?.doubleValue ?? -1) > 0)
        #expect((done["duration_ms"]?.doubleValue ?? 0) >= (done["ttft_ms"]?.doubleValue ?? 1))
        #expect(done["metadata"] == ["tenant": "acme"])
        #expect(events.partialPayloads == 0)

        let text = seen.filter { $0.type == "chunk" }.compactMap { $0["text"]?.stringValue }.joined()
        let log = try redis.run("XRANGE", env.key("{req-42}:log"), "-", "+").array ?? []
        let logLines = log.compactMap { $0.array?[1].array?[1].string }
        #expect(logLines == seen.map(\.raw))
        #expect((try redis.run("TTL", env.key("{req-42}:log")).int ?? -1) > 0)

        let result = try JSONValue.parse(Array(try #require(try redis.run("GET", env.key("{req-42}:result")).string).utf8))
        #expect(result["status"] == "done" && result["text"] == .string(text) && result["finish_reason"] == "stop")
        #expect((try redis.run("TTL", env.key("{req-42}:result")).int ?? -1) > 0)
        try env.until("every job acknowledged") { try redis.run("KEYS", env.key("{chat}:inflight:*")) == .array([]) }
        #expect(try redis.run("LLEN", env.key("{chat}:queue")) == .int(0))

        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    /// `http_threads: 3`: transfers spread over three lanes; every job's lines still arrive whole and in order,
    /// and a cancel reaches the lane that runs the job's transfer.
    @Test func jobsStreamInOrderAndCancelOverSeveralHTTPThreads() async throws {
        let env = try TestEnvironment("lanes")
        let config = try env.writeConfig(workers: 1, modes: ["chat": 64],
                                         routes: ["fast": ["sim/sim:tokens=8,delay_ms=3"], "long": ["sim/sim:tokens=400,delay_ms=50"]],
                                         extra: "http_threads: 3\n")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let ids = (0..<60).map { "lane-\($0)" }
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "fast")) }
        let cancels = (0..<3).map { "lane-cancel-\($0)" }
        for id in cancels { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "long")) }
        try events.wait(what: "the long jobs streaming") { seen in cancels.allSatisfy { (seen[$0]?.count ?? 0) >= 3 } }
        for id in cancels {
            try redis.run("SET", env.key("{\(id)}:cancel"), "1", "EX", "60")
            try redis.run("PUBLISH", env.key("cancel"), id)
        }
        let all = try events.waitForTerminal(ids + cancels, timeout: 60)
        for id in ids {
            let seen = all[id] ?? []
            #expect(seen.map(\.type) == ["start"] + Array(repeating: "chunk", count: 8) + ["done"], "\(id): \(seen)")
            #expect(seen.map(\.seq) == Array(0...9).map { Optional($0) }, "\(id)")
        }
        for id in cancels { #expect(all[id]?.last?["code"] == "cancelled", "\(id): \(all[id] ?? [])") }
        #expect(events.partialPayloads == 0)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func completeAndEmbedModes() async throws {
        let env = try TestEnvironment("modes")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{complete}:queue"), #"{"id":"c-1","model":"sim/sim:tokens=4","prompt":"Once upon"}"#)
        try redis.run("LPUSH", env.key("{embed}:queue"), #"{"id":"e-1","model":"sim/sim:dim=3","input":["alpha","beta"]}"#)
        let all = try events.waitForTerminal(["c-1", "e-1"])
        #expect(all["c-1"]!.map(\.type) == ["start", "chunk", "chunk", "chunk", "chunk", "done"], "\(all["c-1"]!)")
        let e = all["e-1"]!
        #expect(e.map(\.type) == ["start", "embedding", "embedding", "done"], "\(e)")
        #expect(e[1]["index"] == 0 && e[2]["index"] == 1)
        #expect(e[1]["vector"]?.arrayValue?.count == 3)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func badInputIsAnsweredAndDeadLetteredWhileTheWorkerKeepsGoing() async throws {
        let env = try TestEnvironment("bad")
        let config = try env.writeConfig(workers: 1, routes: ["fast": ["sim/sim:tokens=3"]])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let bad: [(String, String?, String)] = [
            ("this is not json", nil, "invalid_job"),
            (#"{"model":"fast","messages":[{"role":"user","content":"x"}]}"#, nil, "invalid_job"),
            (#"{"id":"has space","model":"fast"}"#, nil, "invalid_job"),
            (#"{"id":"bad-type","model":"fast","messages":"nope"}"#, "bad-type", "invalid_job"),
            (#"{"id":"no-model","messages":[{"role":"user","content":"x"}]}"#, "no-model", "invalid_job"),
            (#"{"id":"bad-route","model":"nowhere","messages":[{"role":"user","content":"x"}]}"#, "bad-route", "unknown_model"),
            (#"{"id":"bad-param","model":"fast","messages":[{"role":"user","content":"x"}],"params":{"temperature":"hot"}}"#, "bad-param", "invalid_job"),
            (#"{"id":"salvage-me","model":"fast","#, "salvage-me", "invalid_job"),
        ]
        for (job, _, _) in bad { try redis.run("LPUSH", env.key("{chat}:queue"), job) }
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "good-after", model: "fast"))

        let ids = bad.compactMap(\.1)
        let all = try events.waitForTerminal(ids + ["good-after"])
        for (_, id, code) in bad {
            guard let id else { continue }
            let evs = all[id]!
            #expect(evs.count == 1 && evs[0].type == "error", "\(id): \(evs)")
            #expect(evs[0]["code"] == .string(code), "\(id): \(evs)")
            #expect(evs[0]["retryable"] == false)
            #expect((evs[0]["message"]?.stringValue ?? "").count > 10)
            let result = try JSONValue.parse(Array((try redis.run("GET", env.key("{\(id)}:result")).string ?? "").utf8))
            #expect(result["status"] == "error")
        }
        #expect(all["good-after"]!.last?.type == "done")
        try env.until("all bad jobs dead-lettered") { try redis.run("LLEN", env.key("{chat}:dead")) == .int(bad.count) }
        let dead = try redis.run("LRANGE", env.key("{chat}:dead"), "0", "-1").array!.compactMap(\.string)
        for entry in dead {
            let d = try JSONValue.parse(Array(entry.utf8))
            #expect(d["reason"]?.stringValue?.isEmpty == false && d["job"] != nil && d["code"] != nil, "\(entry)")
        }
        #expect(dead.contains { $0.contains("this is not json") })
        try env.until("every job acknowledged") { try redis.run("KEYS", env.key("{chat}:inflight:*")) == .array([]) }
        #expect(farm.exitStatus == nil, "the farm died: \(env.log())")
        #expect(!env.log().contains("restarting"), "a worker crashed: \(env.log())")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func permitsBoundWhatAWorkerHoldsAndTheRestWaitsInRedis() async throws {
        let env = try TestEnvironment("permits")
        let config = try env.writeConfig(workers: 1, modes: ["chat": 3, "embed": 1], routes: ["slow": ["sim/sim:tokens=10,delay_ms=20"]])
        let events = try env.collector()
        let redis = try env.client()
        let ids = (0..<12).map { "p-\($0)" }
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "slow")) }
        let farm = try env.start(["farm", "--config", config])
        let observer = try env.client()
        var maxHeld = 0
        var sawBacklog = false
        try env.until("all jobs finished") {
            let keys = try observer.run("KEYS", env.key("{chat}:inflight:*")).array ?? []
            var held = 0
            for k in keys { held += try observer.run("LLEN", k.string!).int ?? 0 }
            maxHeld = max(maxHeld, held)
            if held == 3, (try observer.run("LLEN", env.key("{chat}:queue")).int ?? 0) > 0 { sawBacklog = true }
            return ids.allSatisfy { id in events.events(id).contains(where: \.isTerminal) }
        }
        #expect(maxHeld <= 3, "a worker with 3 chat permits held \(maxHeld) jobs")
        #expect(sawBacklog, "never saw 3 jobs held with the backlog waiting in Redis")
        #expect(ids.allSatisfy { events.events($0).last?.type == "done" })
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func fallsBackToTheNextTargetOnlyBeforeOutput() async throws {
        let env = try TestEnvironment("fallback")
        let config = try env.writeConfig(workers: 1, routes: [
            "resilient": ["down/gpt-x", "sim/sim:fault=503", "sim/sim:fault=429,retry_after=3", "sim/sim:tokens=3"],
            "limited": ["sim/sim:fault=429,retry_after=7"],
            "midstream": ["sim/sim:tokens=6,fault=disconnect,after_tokens=2", "sim/sim:tokens=3"],
            "garbled": ["sim/sim:tokens=6,fault=malformed,after_tokens=2"],
        ])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        for (id, model) in [("fb-1", "resilient"), ("fb-2", "limited"), ("fb-3", "midstream"), ("fb-4", "garbled")] {
            try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: model, extra: #","max_attempts":1"#))
        }
        let all = try events.waitForTerminal(["fb-1", "fb-2", "fb-3", "fb-4"])
        let fb1 = all["fb-1"]!
        #expect(fb1.map(\.type) == ["start", "chunk", "chunk", "chunk", "done"], "\(fb1)")
        #expect(fb1[0]["model"] == "sim:tokens=3", "the start event names the target that answered")
        let fb2 = all["fb-2"]!
        #expect(fb2.last?["code"] == "rate_limited" && fb2.last?["retryable"] == true, "\(fb2)")
        let fb3 = all["fb-3"]!
        #expect(fb3.map(\.type) == ["start", "chunk", "chunk", "error"], "no fallback after output: \(fb3)")
        #expect(fb3.last?["code"] == "upstream_error")
        let fb4 = all["fb-4"]!
        #expect(fb4.last?["code"] == "upstream_error" && (fb4.last?["message"]?.stringValue ?? "").contains("malformed"), "\(fb4)")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func sigtermDrainsInFlightJobsAndExitsZero() async throws {
        let env = try TestEnvironment("drain")
        let config = try env.writeConfig(workers: 2, routes: ["slow": ["sim/sim:tokens=40,delay_ms=25"]], drainTimeout: 20)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let ids = (0..<6).map { "d-\($0)" }
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "slow")) }
        try events.wait(what: "every job streaming") { m in ids.allSatisfy { (m[$0]?.count ?? 0) >= 3 } }
        farm.signal(SIGTERM)
        let all = try events.waitForTerminal(ids)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log())")
        for id in ids {
            let evs = all[id]!
            #expect(evs.filter(\.isTerminal).count == 1)
            #expect(evs.last?.type == "done" && evs.filter { $0.type == "chunk" }.count == 40, "\(id): \(evs.map(\.type))")
        }
        try env.until("every job acknowledged") { try redis.run("KEYS", env.key("{chat}:inflight:*")) == .array([]) }
        #expect(env.log().contains("draining"))
    }

    @Test func drainTimeoutPutsUnfinishedJobsBackAndTheNextFarmFinishesThem() async throws {
        let env = try TestEnvironment("drain-timeout")
        let config = try env.writeConfig(workers: 1, routes: ["slow": ["sim/sim:tokens=200,delay_ms=20"], "quick": ["sim/sim:tokens=3"]], drainTimeout: 0.3)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let ids = (0..<3).map { "dt-\($0)" }
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "slow")) }
        try events.wait(what: "every job streaming") { m in ids.allSatisfy { (m[$0]?.count ?? 0) >= 2 } }
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log())")
        try events.wait(what: "retry events") { m in ids.allSatisfy { m[$0]?.contains { $0.type == "retry" } == true } }
        #expect(try redis.run("LLEN", env.key("{chat}:queue")) == .int(3))
        try env.until("every job acknowledged") { try redis.run("KEYS", env.key("{chat}:inflight:*")) == .array([]) }
        for id in ids {
            let retry = events.events(id).first { $0.type == "retry" }!
            #expect(retry["attempt"] == 2 && retry["reason"] == "worker_drained")
            #expect(!events.events(id).contains { $0.isTerminal })
        }
        let fast = try env.writeConfig(workers: 1, routes: ["slow": ["sim/sim:tokens=5"]], name: "fast.yaml")
        let second = try env.start(["farm", "--config", fast], log: "farm2.log")
        let all = try events.waitForTerminal(ids)
        for id in ids {
            let evs = all[id]!
            let afterRetry = evs.drop { $0.type != "retry" }.dropFirst()
            #expect(afterRetry.map(\.type) == ["start", "chunk", "chunk", "chunk", "chunk", "chunk", "done"], "\(id): \(evs.map(\.type))")
            #expect(afterRetry.first?["attempt"] == 2 && afterRetry.first?.seq == 0)
            #expect(evs.filter(\.isTerminal).count == 1)
        }
        second.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(second)) == 0)
    }

    @Test func supervisorRestartsAKilledWorkerAndItsJobsStillFinish() async throws {
        let env = try TestEnvironment("crash")
        let config = try env.writeConfig(workers: 2, routes: ["slow": ["sim/sim:tokens=30,delay_ms=20"]])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        try env.until("two workers running") { TestEnvironment.children(of: farm.pid).count == 2 }
        let before = Set(TestEnvironment.children(of: farm.pid))
        let redis = try env.client()
        let ids = (0..<6).map { "k-\($0)" }
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "slow")) }
        try events.wait(what: "jobs streaming") { m in ids.filter { (m[$0]?.count ?? 0) >= 2 }.count >= 4 }
        // Kill the worker that holds the most jobs; its pid is in its heartbeat hash.
        var victimID = ""
        var most = -1
        for k in try redis.run("KEYS", env.key("{chat}:inflight:*")).array ?? [] {
            let n = try redis.run("LLEN", k.string!).int ?? 0
            if n > most { most = n; victimID = String(k.string!.split(separator: ":").last!) }
        }
        let victim = try #require(pid_t(try redis.run("HGET", env.key("worker:\(victimID)"), "pid").string ?? ""))
        #expect(before.contains(victim))
        kill(victim, SIGKILL)
        try env.until("the supervisor started a replacement") {
            let now = Set(TestEnvironment.children(of: farm.pid))
            return now.count == 2 && !now.contains(victim)
        }
        let all = try events.waitForTerminal(ids, timeout: 60)
        var retried = 0
        for id in ids {
            let evs = all[id]!
            #expect(evs.last?.type == "done", "\(id): \(evs.map(\.type))")
            LifecycleFarmTests.checkAttempts(id, evs)
            if let r = evs.first(where: { $0.type == "retry" }) {
                retried += 1
                #expect(r["reason"] == "worker_lost" && r["attempt"] == 2)
            }
        }
        #expect(retried >= 1, "the killed worker held jobs that had streamed, so some retry was expected")
        #expect(env.log().contains("died (signal 9)"))
        // The acknowledgement follows the terminal write once Redis accepted it.
        try env.until("every job acknowledged") { try redis.run("KEYS", env.key("{chat}:inflight:*")) == .array([]) }
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func eventsResultsJobsAndDeadEntriesMatchTheSchemas() async throws {
        let env = try TestEnvironment("schemas")
        let config = try env.writeConfig(workers: 1, routes: ["fast": ["sim/sim:tokens=4"], "tools": ["sim/sim:tool=get_weather"]])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let jobs = [
            TestEnvironment.chatJob(id: "s-1", model: "fast", extra: #","metadata":{"k":1},"params":{"max_tokens":3}"#),
            TestEnvironment.chatJob(id: "s-2", model: "nowhere"),
            TestEnvironment.chatJob(id: "s-3", model: "sim/sim:fault=500", extra: #","max_attempts":1"#),
            #"{"id":"s-4","model":"tools","messages":[{"role":"user","content":"Weather?"}],"params":{"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}}"#,
            #"{"id":"s-5","model":"fast","messages":7}"#,
        ]
        for j in jobs { try redis.run("LPUSH", env.key("{chat}:queue"), j) }
        try redis.run("LPUSH", env.key("{embed}:queue"), #"{"id":"s-6","model":"sim/sim:dim=4","input":"x"}"#)
        let ids = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"]
        let all = try events.waitForTerminal(ids)
        #expect(all["s-4"]!.contains { $0.type == "tool_call" }, "\(all["s-4"]!)")
        #expect(all["s-4"]!.last?["finish_reason"] == "tool_calls")
        let lines = ids.flatMap { all[$0]!.map(\.raw) }
        let results = try ids.map { id in try #require(try redis.run("GET", env.key("{\(id)}:result")).string) }
        try env.until("three jobs buried") { try redis.run("LLEN", env.key("{chat}:dead")) == .int(3) }
        let dead = try redis.run("LRANGE", env.key("{chat}:dead"), "0", "-1").array!.compactMap(\.string)
        try SchemaCheck.validate("event", lines)
        try SchemaCheck.validate("result", results)
        try SchemaCheck.validate("dead", dead)
        try SchemaCheck.validate("job", Array(jobs.prefix(4)))
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }
}

/// Runs Schemas/validate.py (JSON Schema 2020-12 via the jsonschema package) over NDJSON.
enum SchemaCheck {
    static func validate(_ kind: String, _ lines: [String]) throws {
        let file = NSTemporaryDirectory() + "llmq-schema-\(UUID().uuidString).ndjson"
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let python = ["/usr/bin/python3", "python3"].compactMap(ChildProcess.which).first { p in
            let probe = try? ChildProcess([p, "-c", "import jsonschema"])
            return probe.map { p in
                while p.exitStatus == nil { usleep(5000) }
                return ChildProcess.exitCode(p.exitStatus!) == 0
            } ?? false
        }
        guard let python else { throw TestFailure("no python3 with the jsonschema package; apt-get install python3-jsonschema (make deps)") }
        let out = file + ".out"
        let p = try ChildProcess([python, "\(TestEnvironment.packageRoot)/Schemas/validate.py", kind, file], stdout: out, stderr: out)
        while p.exitStatus == nil { usleep(5000) }
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(ChildProcess.exitCode(p.exitStatus!) == 0, "schema \(kind): \(text)")
        #expect(text.contains("\(lines.count) valid"), "schema \(kind): \(text)")
    }
}
