import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// Retries, cancellation, deadlines, timeouts and remote drains, through real processes.
@Suite(.serialized) struct ReliabilityTests {
    func simStats(_ env: TestEnvironment) throws -> [String: Int] {
        let data = try Data(contentsOf: URL(string: "http://127.0.0.1:\(env.simPort)/sim/stats")!)
        let v = try JSONValue.parse(Array(data))
        return (v.objectValue ?? [:]).compactMapValues(\.intValue)
    }

    @Test func retriesSilentlyBeforeOutputAndAnnouncesRetryAfterIt() async throws {
        let env = try TestEnvironment("retry")
        let config = try env.writeConfig(workers: 1, extra: "retry_base_s: 0.05\nretry_max_s: 0.2\n")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let q = env.key("{chat}:queue")
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "r-silent", model: "sim/sim:tokens=3,fault=503,fail_times=2,key=r1-\(env.prefix)"))
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "r-mid", model: "sim/sim:tokens=5,fault=disconnect,after_tokens=2,fail_times=1,key=r2-\(env.prefix)"))
        let pushedMs = Clock.unixTime() * 1000
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "r-429", model: "sim/sim:tokens=2,fault=429,retry_after=1,fail_times=1,key=r3-\(env.prefix)"))
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "r-spent", model: "sim/sim:fault=500", extra: #","max_attempts":2"#))
        let all = try events.waitForTerminal(["r-silent", "r-mid", "r-429", "r-spent"])

        let silent = all["r-silent"]!
        #expect(silent.map(\.type) == ["start", "chunk", "chunk", "chunk", "done"], "\(silent)")
        #expect(silent[0]["attempt"] == 3, "two silent retries make the third attempt the one that streams")

        let mid = all["r-mid"]!
        #expect(mid.map(\.type) == ["start", "chunk", "chunk", "retry", "start", "chunk", "chunk", "chunk", "chunk", "chunk", "done"], "\(mid)")
        #expect(mid.map(\.seq) == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6].map { Optional($0) })
        #expect(mid[3]["attempt"] == 2 && mid[3]["reason"] == "upstream_error")
        #expect(mid[4]["attempt"] == 2)

        let limited = all["r-429"]!
        #expect(limited.last?.type == "done", "\(limited)")
        // It waited in the delayed set; its first line was logged no sooner than Retry-After allows.
        let firstLogged = try redis.run("XRANGE", env.key("{r-429}:log"), "-", "+", "COUNT", "1").array?.first?.array?.first?.string
        let loggedMs = Double(firstLogged?.split(separator: "-").first ?? "") ?? 0
        #expect(loggedMs >= pushedMs + 950, "Retry-After: 1 was not honoured: \(limited)")

        let spent = all["r-spent"]!
        #expect(spent.map(\.type) == ["start", "error"], "\(spent)")
        #expect(spent.last?["attempt"] == 2 && spent.last?["code"] == "upstream_error")
        try env.until("the spent job buried") { try redis.run("LLEN", env.key("{chat}:dead")) == .int(1) }
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func cancellingARunningJobCutsTheUpstreamAndAQueuedOneNeverCallsIt() async throws {
        let env = try TestEnvironment("cancel")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "c-run", model: "sim/sim:tokens=500,delay_ms=20"))
        try events.wait(what: "c-run streaming") { ($0["c-run"]?.count ?? 0) >= 3 }
        #expect(try simStats(env)["active"] == 1)
        try redis.run("SET", env.key("{c-run}:cancel"), "1", "EX", "60")
        try redis.run("PUBLISH", env.key("cancel"), "c-run")
        let run = try events.waitForTerminal(["c-run"])["c-run"]!
        #expect(run.last?["code"] == "cancelled" && run.last?["retryable"] == false, "\(run)")
        #expect(run.filter { $0.type == "chunk" }.count < 400)
        try env.until("the sim saw the client leave") { try simStats(env)["active"] == 0 }
        #expect(try simStats(env)["aborted"] == 1)

        let before = try simStats(env)["requests"] ?? -1
        try redis.run("SET", env.key("{c-queued}:cancel"), "1", "EX", "60")
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "c-queued", model: "sim/sim:tokens=3"))
        let queued = try events.waitForTerminal(["c-queued"])["c-queued"]!
        #expect(queued.map(\.type) == ["error"] && queued[0]["code"] == "cancelled", "\(queued)")
        #expect(try simStats(env)["requests"] == before, "a cancelled queued job must not reach the provider")
        try env.until("every job acknowledged") { try redis.run("KEYS", env.key("{chat}:inflight:*")) == .array([]) }
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func deadlinesTimeoutsIdleStreamsAndOutputCapsEndWithTheirCodes() async throws {
        let env = try TestEnvironment("limits")
        let config = try env.writeConfig(workers: 1, extra: "max_output_bytes: 200\n")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        let q = env.key("{chat}:queue")
        let past = Int(Date().timeIntervalSince1970) - 10
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "l-expired", model: "sim/sim:tokens=3", extra: #","deadline":\#(past)"#))
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "l-timeout", model: "sim/sim:tokens=100,delay_ms=50", extra: #","timeout_s":0.5"#))
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "l-idle", model: "sim/sim:tokens=10,fault=stall,after_tokens=1", extra: #","max_attempts":1"#))
        try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "l-big", model: "sim/sim:tokens=500"))
        let all = try events.waitForTerminal(["l-expired", "l-timeout", "l-idle", "l-big"], timeout: 40)
        #expect(all["l-expired"]!.map(\.type) == ["error"] && all["l-expired"]![0]["code"] == "expired", "\(all["l-expired"]!)")
        #expect(all["l-timeout"]!.last?["code"] == "timeout", "\(all["l-timeout"]!)")
        #expect(all["l-idle"]!.last?["code"] == "timeout", "\(all["l-idle"]!)")
        #expect(all["l-idle"]!.last?["message"]?.stringValue?.contains("idle_timeout_s") == true)
        #expect(all["l-big"]!.last?["code"] == "upstream_error", "\(all["l-big"]!)")
        #expect(all["l-big"]!.last?["message"]?.stringValue?.contains("max_output_bytes") == true)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func aRemoteDrainStopsTakingJobsFinishesWhatItHoldsAndShowsDraining() async throws {
        let env = try TestEnvironment("remote-drain")
        let config = try env.writeConfig(workers: 1, routes: ["slow": ["sim/sim:tokens=30,delay_ms=20"]])
        let events = try env.collector()
        let worker = try env.start(["worker", "--config", config, "--id", "w-remote"], log: "worker.log")
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "rd-1", model: "slow"))
        try events.wait(what: "rd-1 streaming") { ($0["rd-1"]?.count ?? 0) >= 2 }
        try redis.run("SET", env.key("control:w-remote"), "drain")
        try env.until("the worker reports draining") {
            let s = try redis.run("HGET", env.key("worker:w-remote"), "state").string
            return s == "draining" || s == "drained"
        }
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "rd-2", model: "slow"))
        let done = try events.waitForTerminal(["rd-1"])["rd-1"]!
        #expect(done.last?.type == "done")
        try env.until("the worker reports drained") { try redis.run("HGET", env.key("worker:w-remote"), "state").string == "drained" }
        #expect(try redis.run("LLEN", env.key("{chat}:queue")) == .int(1), "a draining worker must not take new jobs")
        #expect(events.events("rd-2").isEmpty)
        #expect(worker.exitStatus == nil, "a drained worker idles until it is stopped")
        worker.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(worker)) == 0)
        #expect(try redis.run("EXISTS", env.key("worker:w-remote")) == .int(0))
    }

    @Test func aJobRedisMovedWhileTheConnectionBrokeStillRuns() async throws {
        let env = try TestEnvironment("lost-reply")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let worker = try env.start(["worker", "--config", config, "--id", "w-lost"], log: "worker.log")
        let redis = try env.client()
        try env.until("the worker registered") { try redis.run("EXISTS", env.key("worker:w-lost")) == .int(1) }
        // As if BLMOVE had moved the job and the reply were lost with the connection.
        try redis.run("LPUSH", env.key("{chat}:inflight:w-lost"), TestEnvironment.chatJob(id: "lost-1", model: "sim/sim:tokens=3"))
        try redis.run("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        let evs = try events.waitForTerminal(["lost-1"])["lost-1"]!
        #expect(evs.map(\.type) == ["start", "chunk", "chunk", "chunk", "done"], "\(evs)")
        try env.until("the in-flight list is empty") { try redis.run("LLEN", env.key("{chat}:inflight:w-lost")) == .int(0) }
        #expect(env.log("worker.log").contains("found jobs Redis moved"))
        worker.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(worker)) == 0)
    }
}
