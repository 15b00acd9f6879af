import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// The chaos suite: real farms under load while workers are killed, the farm
/// is drained and restarted, Redis restarts, the upstream misbehaves, hostile
/// jobs flood in and running jobs are cancelled. Every job pushed must end in
/// exactly one terminal event and never be held by two workers at once.
///
/// `make test` runs it small; `make chaos` (LLMQ_CHAOS_SIZE=full) runs it at full size.
@Suite(.serialized) struct ChaosTests {
    static let full = ProcessInfo.processInfo.environment["LLMQ_CHAOS_SIZE"] == "full"
    static let jobs = full ? 600 : 60

    @Test func killNineOfRandomWorkersDuringAStreamingLoad() async throws {
        try await Chaos(name: "kill -9 workers", jobs: Self.jobs) { c in
            try await c.waitProgress(0.1)
            for _ in 0..<(Self.full ? 30 : 5) {
                guard let victim = c.workerPIDs().randomElement() else { continue }
                kill(victim, SIGKILL)
                c.disruptions += 1
                try await Task.sleep(for: .milliseconds(Int.random(in: 200...400)))
            }
        }.run()
    }

    @Test func sigtermOfTheFarmMidLoadThenARestart() async throws {
        try await Chaos(name: "SIGTERM farm + restart", jobs: Self.jobs, drainTimeout: 0.5) { c in
            try await c.waitProgress(0.3)
            c.farm.signal(SIGTERM)
            _ = try await c.env.waitExit(c.farm, timeout: 30)
            c.disruptions += 1
            c.farm = try c.env.start(["farm", "--config", c.config], log: "farm-restarted.log")
        }.run()
    }

    @Test func redisRestartsMidLoad() async throws {
        try await Chaos(name: "redis-server restart", jobs: Self.jobs, persistence: true) { c in
            try await c.waitProgress(0.3)
            try await c.env.redis.restart()
            c.disruptions += 1
        }.run()
    }

    @Test func upstreamInjects429s503sStallsAndDisconnects() async throws {
        let faults = ["fault=429,retry_after=0", "fault=503", "fault=stall,after_tokens=1", "fault=disconnect,after_tokens=3", "fault=malformed,after_tokens=2"]
        try await Chaos(name: "upstream faults", jobs: Self.jobs, model: { i in
            i % 3 == 0 ? "sim/sim:tokens=20,delay_ms=10" : "sim/sim:tokens=20,delay_ms=10,\(faults[i % faults.count]),fail_times=1,key=j\(i)-\(UUID().uuidString.prefix(6))"
        }) { _ in }.run()
    }

    /// A provider in a storm (429 15%, 503 10%, cut streams 5%) with `max_attempts: 6`: waiting for the
    /// cooldowns happens in Redis and costs no attempt, so nearly every job ends done. A call that itself
    /// got the 429 was an attempt, though: about 27% of calls fail, six in a row about once in 2,400 jobs,
    /// so the small run (60 jobs) may lose one: requiring all 60 failed about one run in 40, and a CI run did.
    @Test func anUpstreamStormIsAbsorbed() async throws {
        let seed = Int.random(in: 1...1_000_000)
        let c = try await Chaos(name: "upstream storm", jobs: Self.jobs, model: { i in
            "sim/sim:tokens=20,delay_ms=10,fault_429=0.15,retry_after=1,fault_503=0.10,cut=0.05,after_tokens=3,seed=\(seed),key=storm-\(i)"
        }) { _ in }
        c.minDone = Self.full ? 0.99 : 0.98
        try await c.run()
    }

    /// While a provider cools down, the jobs for it wait in the delayed set: the in-flight lists hold
    /// nothing that only waits, and the workers' memory stays flat however many jobs wait.
    @Test func aLongCooldownWithAThousandQueuedJobsHoldsNothingInWorkers() async throws {
        let waiting = Self.full ? 1000 : 300
        let cooldown = Self.full ? 30 : 8
        let env = try TestEnvironment("cooldown-storm")
        let config = try env.writeConfig(
            workers: 2, modes: ["chat": 8],
            providers: "  cool: {kind: sim, base_url: \"\(env.simURL)\", timeout_s: 30, cooldown_s: \(cooldown), cooldown_max_s: 120}\n")
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try env.until("two workers running") { TestEnvironment.children(of: farm.pid).count == 2 }
        let q = env.key("{chat}:queue")
        // Warm the workers up, then measure them.
        for i in 0..<20 { try redis.run("LPUSH", q, TestEnvironment.chatJob(id: "warm-\(i)", model: "cool/sim:tokens=3")) }
        try env.until("the warm-up done") { try (0..<20).allSatisfy { try redis.run("EXISTS", env.key("{warm-\($0)}:result")) == .int(1) } }
        let before = TestEnvironment.children(of: farm.pid).compactMap(HostileJobFuzzTests.rss).reduce(0, +)
        try redis.run("LPUSH", q, TestEnvironment.chatJob(
            id: "trigger", model: "cool/sim:fault=429,retry_after=\(cooldown),fail_times=1,key=trigger-\(env.prefix),tokens=3"))
        try env.until("the provider cooling down") { (try redis.run("PTTL", env.key("cooldown:cool")).int ?? -2) > 0 }
        let ids = (0..<waiting).map { "cw-\($0)" }
        for id in ids { try redis.run("LPUSH", q, TestEnvironment.chatJob(id: id, model: "cool/sim:tokens=3", extra: #","max_attempts":1"#)) }
        // A worker learns of the other's cooldown within its board's refresh (200 ms): the jobs it took
        // before may run (how many depends on how fast it is); every other one waits in the delayed set.
        let finishedCount = { try ids.filter { try redis.run("EXISTS", env.key("{\($0)}:result")) == .int(1) }.count }
        var ranBeforeTheBoardKnew = 0
        try env.until("every job waiting in the delayed set or done", timeout: 20) {
            ranBeforeTheBoardKnew = try finishedCount()
            return try redis.run("LLEN", q).int == 0 && (redis.run("ZCARD", env.key("{chat}:delayed")).int ?? 0) + ranBeforeTheBoardKnew >= waiting
        }
        #expect(try redis.run("ZCARD", env.key("{chat}:delayed")).int ?? 0 > 0, "no job waited for the cooldown")
        // Sample while the cooldown lasts: nothing runs, nothing in flight, memory flat.
        var samples = 0
        var inflightSeen = 0
        var rssPeak = 0
        while (try redis.run("PTTL", env.key("cooldown:cool")).int ?? -2) > 500 && samples < 400 {
            for k in try redis.run("KEYS", env.key("{chat}:inflight:*")).array ?? [] { inflightSeen += try redis.run("LLEN", k.string!).int ?? 0 }
            rssPeak = max(rssPeak, TestEnvironment.children(of: farm.pid).compactMap(HostileJobFuzzTests.rss).reduce(0, +))
            samples += 1
            usleep(50_000)
        }
        #expect(samples > 5, "the cooldown ended before it could be sampled")
        #expect(inflightSeen == 0, "jobs that only wait for a cooldown sat in workers' in-flight lists")
        #expect(try finishedCount() == ranBeforeTheBoardKnew, "a job ran while every worker knew the provider was cooling down")
        #expect(Double(rssPeak) <= Double(before) * 1.2 + 4096, "worker RSS grew from \(before) KiB to \(rssPeak) KiB while jobs waited")
        let t0 = Date()
        try env.until("every waiting job done", timeout: Double(cooldown) + 60) {
            try ids.allSatisfy { try redis.run("EXISTS", env.key("{\($0)}:result")) == .int(1) }
        }
        var done = 0
        for id in ids where (try redis.run("GET", env.key("{\(id)}:result")).string ?? "").contains(#""status":"done""#) { done += 1 }
        #expect(done == waiting, "waiting for a cooldown is not an attempt: every single-attempt job must end done")
        ChaosReport.add("<!-- cooldown: \(waiting) jobs waited \(cooldown) s, in-flight samples \(inflightSeen), RSS \(before) -> \(rssPeak) KiB, drained in \(String(format: "%.1f", Date().timeIntervalSince(t0))) s -->")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func aFloodOfHostileJobsMixedWithGoodOnes() async throws {
        try await Chaos(name: "hostile flood", jobs: Self.jobs, hostile: Self.full ? 300 : 40) { _ in }.run()
    }

    @Test func cancellationOfRandomRunningJobs() async throws {
        try await Chaos(name: "cancellations", jobs: Self.jobs, model: { _ in "sim/sim:tokens=60,delay_ms=10" }) { c in
            try await c.waitProgress(0.05)
            for _ in 0..<(Self.jobs / 5) {
                let i = Int.random(in: 0..<c.jobCount)
                let id = c.id(i)
                try c.redis.run("SET", c.env.key("{\(id)}:cancel"), "1", "EX", "300")
                try c.redis.run("PUBLISH", c.env.key("cancel"), id)
                c.disruptions += 1
                try await Task.sleep(for: .milliseconds(20))
            }
        }.run()
    }
}

/// One chaos scenario: a farm, a load, a disruption, and the accounting.
final class Chaos: @unchecked Sendable {  // used by one test task, plus the sampler thread for `doubleHeld`
    let name: String
    let env: TestEnvironment
    let config: String
    var farm: ChildProcess
    let redis: PlainRedis
    let jobCount: Int
    let hostileCount: Int
    let model: (Int) -> String
    let disrupt: (Chaos) async throws -> Void
    /// The share of jobs that must end `done` (the rest may end with an error).
    var minDone = 0.0
    var disruptions = 0
    let run = UUID().uuidString.prefix(6).lowercased()
    private let sampler = SamplerState()

    init(name: String, jobs: Int, hostile: Int = 0, persistence: Bool = false, drainTimeout: Double = 5,
         model: @escaping (Int) -> String = { _ in "sim/sim:tokens=40,delay_ms=10" }, disrupt: @escaping (Chaos) async throws -> Void) async throws {
        self.name = name
        env = try TestEnvironment("chaos", persistence: persistence)
        config = try env.writeConfig(
            workers: 3, modes: ["chat": 8], drainTimeout: drainTimeout,
            extra: "max_attempts: 6\nretry_base_s: 0.05\nretry_max_s: 0.5\nrestart_backoff_max_s: 0.2\nmax_job_bytes: 65536\n")
        farm = try env.start(["farm", "--config", config])
        redis = try env.client()
        jobCount = jobs
        hostileCount = hostile
        self.model = model
        self.disrupt = disrupt
    }

    func id(_ i: Int) -> String { "ch-\(run)-\(i)" }

    func workerPIDs() -> [pid_t] { TestEnvironment.children(of: farm.pid) }

    /// Jobs whose log holds a terminal line, as a fraction of all.
    func progress() throws -> Double {
        var finished = 0
        for i in 0..<jobCount where try terminalLines(id(i)) > 0 { finished += 1 }
        return Double(finished) / Double(jobCount)
    }

    func waitProgress(_ fraction: Double, timeout: Double = 60) async throws {
        let end = Date().addingTimeInterval(timeout)
        while try progress() < fraction {
            guard Date() < end else { throw TestFailure("\(name): load never reached \(Int(fraction * 100))%") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    func terminalLines(_ id: String) throws -> Int {
        let entries = (try? redis.run("XRANGE", env.key("{\(id)}:log"), "-", "+").array) ?? []
        return entries.filter { e in
            guard let line = e.array?[1].array?[1].string else { return false }
            return line.contains(#""type":"done""#) || line.contains(#""type":"error""#)
        }.count
    }

    func pushAll() throws {
        let q = env.key("{chat}:queue")
        var hostile = ChaosHostile.jobs(run: String(run))
        for i in 0..<jobCount {
            try redis.run("LPUSH", q, TestEnvironment.chatJob(id: id(i), model: model(i)))
            if i < hostileCount {
                try redis.run(bytes: [Array("LPUSH".utf8), Array(q.utf8), hostile[i % hostile.count]])
                if i % hostile.count == hostile.count - 1 { hostile = ChaosHostile.jobs(run: String(run) + "x\(i)") }
            }
        }
    }

    func run() async throws {
        let t0 = Date()
        let port = env.redis.port
        let stopSampling = sampler
        let prefix = env.prefix
        let samplerThread = Thread { Chaos.sample(port: port, prefix: prefix, state: stopSampling) }
        samplerThread.start()
        defer { sampler.stop() }
        try pushAll()
        try await disrupt(self)
        let deadline = Date().addingTimeInterval(Self.finishTimeout)
        var zero: [String] = []
        var doubled: [String] = []
        var seen = 0
        while true {
            zero = []
            doubled = []
            seen = 0
            for i in 0..<jobCount {
                let n = try freshRedis().terminalLinesCount(env: env, id: id(i))
                seen += n
                if n == 0 { zero.append(id(i)) } else if n > 1 { doubled.append(id(i)) }
            }
            if zero.isEmpty || Date() > deadline { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let r = try freshRedis()
        // Burial follows the terminal write once Redis accepted it.
        try? env.until("the hostile jobs buried", timeout: 10) { (try r.run("LLEN", env.key("{chat}:dead")).int ?? -1) >= hostileCount }
        let dead = try r.run("LLEN", env.key("{chat}:dead")).int ?? -1
        let hostileDead = hostileCount
        let held = sampler.doubleHeld
        var done = 0
        for i in 0..<jobCount {
            let result = try r.run("GET", env.key("{\(id(i))}:result")).string ?? ""
            if result.contains(#""status":"done""#) { done += 1 }
        }
        let seconds = Date().timeIntervalSince(t0)
        farm.signal(SIGTERM)
        _ = try? await env.waitExit(farm, timeout: 30)
        func pad(_ v: Any, _ n: Int) -> String {
            let s = "\(v)"
            return s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
        }
        let row = "| " + [pad(name, 24), pad(jobCount + hostileCount, 6), pad(seen, 8), pad(zero.count, 5), pad(doubled.count, 7),
                          pad(held, 9), pad(dead, 5), pad(disruptions, 7), pad(String(format: "%.1f", seconds), 7)].joined(separator: " | ") + " |"
        ChaosReport.add(row)
        #expect(zero.isEmpty, "\(name): \(zero.count) jobs never ended: \(zero.prefix(5)); farm log tail: \(env.log().suffix(1500))")
        #expect(doubled.isEmpty, "\(name): jobs with two terminal events: \(doubled.prefix(5))")
        #expect(held == 0, "\(name): \(held) samples saw a job held by two workers")
        #expect(Double(done) >= minDone * Double(jobCount), "\(name): only \(done) of \(jobCount) jobs ended done")
        if minDone > 0 { ChaosReport.add("<!-- \(name): \(done) of \(jobCount) done -->") }
        if hostileCount > 0 {
            #expect(dead >= hostileDead, "\(name): \(dead) dead-lettered, expected at least the \(hostileDead) hostile jobs")
            #expect(!env.log().contains("died ("), "\(name): a worker crashed on hostile input: \(env.log().suffix(2000))")
        }
    }

    static var finishTimeout: Double { ChaosTests.full ? 300 : 90 }

    /// A fresh connection each round: the scenario may have restarted Redis under the old one.
    func freshRedis() throws -> PlainRedis {
        if let r = try? PlainRedis(port: env.redis.port), (try? r.run("PING")) == .string("PONG") { return r }
        throw TestFailure("\(name): Redis is not answering")
    }

    /// Samples every in-flight list and counts samples where one id sits in two workers' lists.
    static func sample(port: Int, prefix: String, state: SamplerState) {
        var client = try? PlainRedis(port: port)
        while !state.stopped {
            if client == nil { client = try? PlainRedis(port: port) }
            // One script reads every list at one instant: a job moving between workers is never seen twice.
            let snapshot = "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do out[#out + 1] = k; out[#out + 1] = redis.call('LRANGE', k, 0, -1) end return out"
            guard let c = client, let flat = try? c.run("EVAL", snapshot, "0", "\(prefix):{chat}:inflight:*").array else {
                client = nil
                usleep(20_000)
                continue
            }
            var owner: [String: String] = [:]
            var clash = false
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                guard let key = flat[i].string, let items = flat[i + 1].array else { continue }
                for item in items {
                    guard let raw = item.string, let id = (try? JSONValue.parse(Array(raw.utf8)))?["id"]?.stringValue else { continue }
                    if let other = owner[id], other != key { clash = true }
                    owner[id] = key
                }
            }
            if clash { state.recordClash() }
            usleep(20_000)
        }
    }
}

extension PlainRedis {
    func terminalLinesCount(env: TestEnvironment, id: String) throws -> Int {
        let entries = try run("XRANGE", env.key("{\(id)}:log"), "-", "+").array ?? []
        return entries.filter { e in
            guard let line = e.array?[1].array?[1].string else { return false }
            return line.contains(#""type":"done""#) || line.contains(#""type":"error""#)
        }.count
    }
}

final class SamplerState: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var _stopped = false
    private var clashes = 0
    var stopped: Bool { lock.withLock { _stopped } }
    var doubleHeld: Int { lock.withLock { clashes } }
    func stop() { lock.withLock { _stopped = true } }
    func recordClash() { lock.withLock { clashes += 1 } }
}

/// Hostile jobs: each must be refused with a clear error and dead-lettered, never crash a worker.
enum ChaosHostile {
    static func jobs(run: String) -> [[UInt8]] {
        let deep = String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)
        let badUTF8 = Array(#"{"id":"h-\#(run)-utf","model":"m","messages":[{"role":"user","content":""#.utf8) + [0xC3, 0x28, 0xFF] + Array(#""}]}"#.utf8)
        return [badUTF8] + [
            "not json at all",
            #"{"id":"h-\#(run)-huge","model":"m","messages":[{"role":"user","content":"\#(String(repeating: "x", count: 70000))"}]}"#,
            #"{"id":"h-\#(run)-deep","model":"m","metadata":\#(deep)}"#,
            #"{"id":7,"model":"m"}"#,
            #"{"id":"has space \#(run)","model":"m"}"#,
            #"{"id":"brace{\#(run)}","model":"m"}"#,
            #"{"id":"h-\#(run)-param","model":"sim/sim:tokens=2","messages":[{"role":"user","content":"x"}],"params":{"evil":1}}"#,
            #"{"id":"h-\#(run)-mode","mode":"embed","model":"sim/sim:tokens=2","messages":[{"role":"user","content":"x"}]}"#,
            #"{"id":"h-\#(run)-types","model":["m"],"messages":{"role":"user"}}"#,
            "[]",
            "",
        ].map { Array($0.utf8) }
    }
}

/// Collects the scenario rows and prints the table once the suite's tests have run.
enum ChaosReport {
    nonisolated(unsafe) static var rows: [String] = []
    static let lock = NSLock()

    static func add(_ row: String) {
        lock.withLock {
            rows.append(row)
            let header = """

                chaos (\(ChaosTests.full ? "full" : "small") size)
                | scenario                 | pushed | terminal | zero  | doubled | 2 holders | dead  | disrupt | seconds |
                |--------------------------|--------|----------|-------|---------|-----------|-------|---------|---------|
                """
            print(([header] + rows).joined(separator: "\n"))
        }
    }
}
