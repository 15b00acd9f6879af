import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// Lifecycle v2 through real processes: waiting happens in Redis (the delayed
/// set), not in workers; leases fence a stalled worker off its jobs.
@Suite(.serialized) struct LifecycleFarmTests {
    /// Every attempt of a job counts seq from 0 without gaps; a new attempt after output is announced by `retry`.
    static func checkAttempts(_ id: String, _ evs: [Event]) {
        var expected = 0
        for e in evs {
            if e.type == "start" && e.seq == 0 && expected != 0 {
                Issue.record("\(id): a new attempt began without a retry event: \(evs.map(\.raw))")
            }
            #expect(e.seq == expected, "\(id): \(evs.map(\.raw))")
            expected = e.type == "retry" ? 0 : expected + 1
        }
        #expect(evs.filter(\.isTerminal).count == 1, "\(id): \(evs.map(\.raw))")
    }

    static func inflightTotal(_ redis: PlainRedis, _ env: TestEnvironment, mode: Mode = "chat") throws -> Int {
        var n = 0
        for k in try redis.run("KEYS", env.key("{\(mode)}:inflight:*")).array ?? [] { n += try redis.run("LLEN", k.string!).int ?? 0 }
        return n
    }

    @Test func jobsWaitForACoolingProviderInRedisWithoutSpendingAnAttempt() async throws {
        let env = try TestEnvironment("cooling")
        let config = try env.writeConfig(
            workers: 1, modes: ["chat": 4],
            providers: "  cool: {kind: sim, base_url: \"\(env.simURL)\", timeout_s: 30, cooldown_s: 3, cooldown_max_s: 10}\n")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        // The first call gets a 429 asking for 3 s: the provider cools down for the whole farm.
        try redis.run("LPUSH", env.key("{chat}:queue"),
                      TestEnvironment.chatJob(id: "first", model: "cool/sim:fault=429,retry_after=3,fail_times=1,key=cool1,tokens=3"))
        try env.until("the first job to wait in the delayed set", timeout: 10) {
            try redis.run("ZCARD", env.key("{chat}:delayed")).int == 1
        }
        // Twenty more jobs with a single attempt each arrive while it cools down: more than the worker's 4 permits.
        let ids = (0..<20).map { "w-\($0)" }
        for id in ids {
            try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "cool/sim:tokens=3", extra: #","max_attempts":1"#))
        }
        try env.until("all 21 jobs waiting in Redis with nothing in flight", timeout: 10) {
            try redis.run("ZCARD", env.key("{chat}:delayed")).int == 21 && Self.inflightTotal(redis, env) == 0
                && redis.run("LLEN", env.key("{chat}:queue")).int == 0
        }
        let all = try events.waitForTerminal(["first"] + ids, timeout: 30)
        for id in ids {
            let evs = all[id]!
            #expect(evs.map(\.type) == ["start", "chunk", "chunk", "chunk", "done"], "\(id): \(evs.map(\.raw))")
            #expect(evs.first?["attempt"] == 1, "waiting for a cooldown is not an attempt: \(evs.map(\.raw))")
        }
        let first = all["first"]!
        #expect(first.first?["attempt"] == 2, "the 429 reached the provider, so it counted: \(first.map(\.raw))")
        #expect(first.last?.type == "done")
        #expect(try redis.run("ZCARD", env.key("{chat}:delayed")).int == 0)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func notBeforeHoldsAJobInTheDelayedSetUntilItsTime() async throws {
        let env = try TestEnvironment("notbefore")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        // Far enough ahead that the other job ends first even on a loaded machine.
        let due = Clock.unixTime() + 6
        try redis.run("LPUSH", env.key("{chat}:queue"),
                      TestEnvironment.chatJob(id: "later", model: "sim/sim:tokens=2", extra: #","not_before":\#(due),"max_attempts":1"#))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "now", model: "sim/sim:tokens=2"))
        let early = try events.waitForTerminal(["now"])
        #expect(early["now"]!.last?.type == "done")
        #expect(try redis.run("ZCARD", env.key("{chat}:delayed")).int == 1)
        #expect(events.events("later").isEmpty, "a delayed job says nothing until it starts")
        let later = try events.waitForTerminal(["later"], timeout: 25)["later"]!
        #expect(Clock.unixTime() >= due)
        #expect(later.map(\.type) == ["start", "chunk", "chunk", "done"] && later.first?["attempt"] == 1, "\(later.map(\.raw))")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func aRetryAfterOutputIsAnnouncedWithItsWaitAndStartsOver() async throws {
        let env = try TestEnvironment("retryin")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"),
                      TestEnvironment.chatJob(id: "cut", model: "sim/sim:tokens=4,fault=disconnect,after_tokens=2,fail_times=1,key=cut1"))
        let evs = try events.waitForTerminal(["cut"])["cut"]!
        Self.checkAttempts("cut", evs)
        let retry = try #require(evs.first { $0.type == "retry" }, "\(evs.map(\.raw))")
        #expect(retry["attempt"] == 2)
        #expect((retry["retry_in_s"]?.doubleValue ?? -1) >= 0, "\(retry.raw)")
        #expect(evs.last?.type == "done")
        let result = try JSONValue.parse(Array(try #require(try redis.run("GET", env.key("{cut}:result")).string).utf8))
        #expect(result["attempt"] == 2 && result["text"]?.stringValue?.isEmpty == false)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func aJobWhoseWaitOutlivesItsTimeoutEndsTimeoutAtOnce() async throws {
        let env = try TestEnvironment("waitbound")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(
            id: "tight", model: "sim/sim:fault=429,retry_after=60", extra: #","timeout_s":5,"max_attempts":5"#))
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(
            id: "deadline", model: "sim/sim:fault=429,retry_after=60", extra: #","deadline":\#(Clock.unixTime() + 5),"max_attempts":5"#))
        let all = try events.waitForTerminal(["tight", "deadline"], timeout: 10)
        #expect(all["tight"]!.last?["code"] == "timeout", "\(all["tight"]!.map(\.raw))")
        #expect(all["deadline"]!.last?["code"] == "expired", "\(all["deadline"]!.map(\.raw))")
        #expect(try redis.run("ZCARD", env.key("{chat}:delayed")).int == 0)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    /// A worker paused past its lease must not write for the jobs a reaper put back meanwhile:
    /// every job still ends once, with gapless seq in every attempt.
    @Test func aStalledWorkerFencesItselfOffTheJobsItHeld() async throws {
        let env = try TestEnvironment("stall")
        let config = try env.writeConfig(workers: 2, modes: ["chat": 4], routes: ["slow": ["sim/sim:tokens=50,delay_ms=100"]])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        try env.until("two workers running") { TestEnvironment.children(of: farm.pid).count == 2 }
        let redis = try env.client()
        let ids = (0..<8).map { "st-\($0)" }
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "slow", extra: #","max_attempts":3"#)) }
        try events.wait(what: "every job streaming") { m in ids.allSatisfy { (m[$0]?.count ?? 0) >= 3 } }
        var victimID = ""
        for k in try redis.run("KEYS", env.key("{chat}:inflight:*")).array ?? [] where try redis.run("LLEN", k.string!).int ?? 0 > 0 {
            victimID = String(k.string!.split(separator: ":").last!)
            break
        }
        let victim = try #require(pid_t(try redis.run("HGET", env.key("worker:\(victimID)"), "pid").string ?? ""))
        let held = try redis.run("LRANGE", env.key("{chat}:inflight:\(victimID)"), "0", "-1").array?.count ?? 0
        #expect(held > 0)
        kill(victim, SIGSTOP)
        // The other worker's reaper puts the stalled worker's jobs back once its heartbeat expired.
        try env.until("the stalled worker's jobs were put back", timeout: 40) {
            try redis.run("LLEN", env.key("{chat}:inflight:\(victimID)")).int == 0
        }
        try events.wait(timeout: 20, what: "a reaped job running again elsewhere") { m in
            ids.contains { id in (m[id] ?? []).contains { $0.type == "start" && $0["attempt"] == 2 } }
        }
        kill(victim, SIGCONT)
        let all = try events.waitForTerminal(ids, timeout: 60)
        for id in ids {
            Self.checkAttempts(id, all[id]!)
            #expect(all[id]!.last?.type == "done", "\(id): \(all[id]!.map(\.raw))")
        }
        try env.until("the resumed worker noticed its lapsed lease", timeout: 10) { env.log().contains("lease lapsed") }
        #expect(TestEnvironment.children(of: farm.pid).contains(victim), "the stalled worker was not restarted; it fenced itself")
        #expect(try Self.inflightTotal(redis, env) == 0)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    /// Redis refusing the terminal write (out of memory) must not be followed by the acknowledgement:
    /// the job stays in flight until Redis takes the write, then ends once.
    @Test func aRefusedTerminalWriteIsNeverAcknowledged() async throws {
        let env = try TestEnvironment("oom")
        let config = try env.writeConfig(workers: 1)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "oom-1", model: "sim/sim:tokens=20,delay_ms=50"))
        try events.wait(what: "the job streaming") { m in (m["oom-1"]?.count ?? 0) >= 3 }
        try redis.run("CONFIG", "SET", "maxmemory-policy", "noeviction")
        try redis.run("CONFIG", "SET", "maxmemory", "1")
        try env.until("Redis refusing the terminal write", timeout: 20) { env.log().contains("OOM command not allowed") }
        #expect(try Self.inflightTotal(redis, env) == 1, "the job must stay in flight while its terminal write is refused")
        #expect(try redis.run("EXISTS", env.key("{oom-1}:result")) == .int(0))
        try redis.run("CONFIG", "SET", "maxmemory", "0")
        let evs = try events.waitForTerminal(["oom-1"], timeout: 30)["oom-1"]!
        #expect(evs.filter(\.isTerminal).count == 1 && evs.last?.type == "done", "\(evs.map(\.raw))")
        try env.until("the job acknowledged once its terminal write went through") { try Self.inflightTotal(redis, env) == 0 }
        #expect(try redis.run("EXISTS", env.key("{oom-1}:result")) == .int(1))
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }
}
