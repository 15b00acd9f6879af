import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// Redis Sentinel: `redis+sentinel://` URLs, a farm that finds its master
/// through three sentinels, and failovers under load with and without
/// `durability: replica`, counted the way the chaos suite counts (jobs never
/// ended, jobs with two terminal events) plus results that were written and
/// then lost with the old master.
@Suite(.serialized) struct SentinelTests {
    @Test func sentinelURLsParseAndExplainMistakes() throws {
        let u = try RedisURL("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380,sentinel-c/main/2", environment: [:])
        #expect(u.sentinel?.sentinels.map(\.port) == [26379, 26380, 26379])
        #expect(u.sentinel?.sentinels.map(\.host) == ["10.0.0.1", "10.0.0.2", "sentinel-c"])
        #expect(u.sentinel?.masterName == "main")
        #expect(u.password == "s3cret" && u.database == 2)
        #expect(u.description == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,sentinel-c:26379/main/2")
        let env = ["LLMQ_SENTINEL_PASSWORD": "sp", "LLMQ_REDIS_PASSWORD": "mp"]
        let v = try RedisURL("redis+sentinel://127.0.0.1:1/m", environment: env)
        #expect(v.sentinel?.password == "sp" && v.password == "mp")
        for bad in ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://127.0.0.1:26379/", "redis+sentinel:///m",
                    "redis+sentinel://h:0/m", "redis+sentinel://h:x/m", "redis+sentinel://h/m/x"] {
            #expect(throws: LLMQError.self, "\(bad) must be refused") { try RedisURL(bad, environment: [:]) }
        }
        #expect(throws: LLMQError.self) { try ConfigLoader.validate({ var c = FarmConfig(); c.durability = "disk"; return c }(), source: "t") }
        let compose = try ConfigLoader.load(path: "\(TestEnvironment.packageRoot)/Ops/sentinel/farm.yaml", environment: [:])
        let composeURL = try RedisURL(compose.redis)
        #expect(compose.durability == "replica")
        #expect(composeURL.sentinel?.sentinels.count == 3)
    }

    @Test func aFarmFindsItsMasterThroughTheSentinels() async throws {
        let env = try TestEnvironment("sentinel")
        let s = try LocalSentinels(directory: env.dir + "/sentinel")
        defer { s.stop() }
        // A dead sentinel first in the list is skipped; a connection lands on the master, never the replica.
        let dead = try FreePort.find()
        let url = try RedisURL(s.url.replacingOccurrences(of: "://", with: "://127.0.0.1:\(dead),"))
        let c = try RedisConnection(url)
        #expect(try c.command(["ROLE"]).array?.first?.string == "master")
        #expect(try c.command(["SET", env.key("probe"), "1"]) == .status("OK"))

        let config = try sentinelConfig(env, s, workers: 1)
        let farm = try env.start(["farm", "--config", config])
        let master = try PlainRedis(port: s.masterPort() ?? 0)
        let ids = (0..<20).map { "sf-\($0)" }
        for id in ids { try master.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=3")) }
        try env.until("20 jobs done through the sentinel URL", timeout: 30) {
            try ids.allSatisfy { (try master.run("GET", env.key("{\($0)}:result")).string ?? "").contains(#""status":"done""#) }
        }
        // `llmq stats` and the other commands take the same URL.
        let stats = try env.start(["stats", "--redis", s.url, "--prefix", env.prefix], log: "stats.log")
        #expect(ChildProcess.exitCode(try await env.waitExit(stats)) == 0, "llmq stats failed: \(env.log("stats.log"))")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "farm log: \(env.log().suffix(1500))")
    }

    /// `durability: replica` without any replica: the terminal write goes out (subscribers see it) but the
    /// job stays in flight, unacknowledged, until a replica confirms it; then it is acknowledged.
    @Test func replicaDurabilityHoldsTheAcknowledgementUntilAReplicaConfirms() async throws {
        let env = try TestEnvironment("durability")
        let config = try env.writeConfig(workers: 1, modes: ["chat": 2], extra: "durability: replica\n")
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "d-1", model: "sim/sim:tokens=3"))
        try env.until("the terminal write of d-1", timeout: 30) { try redis.terminalLinesCount(env: env, id: "d-1") == 1 }
        let inflight = { try (redis.run("KEYS", env.key("{chat}:inflight:*")).array ?? []).reduce(0) { n, k in
            n + (try redis.run("LLEN", k.string!).int ?? 0)
        } }
        // Several WAITs of 1 s each come back empty meanwhile; the job must still be held.
        let held = Date().addingTimeInterval(2.5)
        while Date() < held {
            #expect(try inflight() == 1, "a job was acknowledged before any replica confirmed its terminal write")
            try await Task.sleep(for: .milliseconds(100))
        }
        let replica = try LocalRedis(directory: env.dir + "/replica", extraArguments: ["--replicaof", "127.0.0.1", String(env.redis.port)])
        defer { replica.process.signal(SIGKILL) }
        try env.until("d-1 acknowledged once a replica confirmed", timeout: 30) { try inflight() == 0 }
        #expect(try redis.terminalLinesCount(env: env, id: "d-1") == 1)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "farm log: \(env.log().suffix(1500))")
    }

    /// A master with `min-replicas-to-write` and too few replicas refuses writes with NOREPLICAS for a while:
    /// "not now", so the lines are sent again, never dropped.
    @Test func writesRefusedForWantOfReplicasAreSentAgain() async throws {
        let env = try TestEnvironment("noreplicas")
        let config = try env.writeConfig(workers: 1, modes: ["chat": 2])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "nr-1", model: "sim/sim:tokens=20,delay_ms=100"))
        _ = try events.wait(what: "nr-1 streaming") { m in (m["nr-1"]?.count ?? 0) >= 2 }
        try redis.run("CONFIG", "SET", "min-replicas-to-write", "1")
        try await Task.sleep(for: .milliseconds(1500))  // the refusal lasts a while: this is the disruption, not a wait for an event
        try redis.run("CONFIG", "SET", "min-replicas-to-write", "0")
        let all = try events.waitForTerminal(["nr-1"])["nr-1"]!
        #expect(all.last?.type == "done", "\(all.map(\.raw))")
        // Subscribers may see a resent line twice (PUBLISH is not refused, the batch goes again whole); none is missing.
        var distinct: [Int] = []
        for q in all.compactMap(\.seq) where distinct.last != q { distinct.append(q) }
        #expect(distinct == Array(0..<distinct.count), "lines were lost: \(all.map(\.raw))")
        // The log holds every line exactly once.
        let log = try redis.run("XRANGE", env.key("{nr-1}:log"), "-", "+").array ?? []
        let logged = log.compactMap { $0.array?[1].array?[1].string.map { Event($0).seq } ?? nil }
        #expect(logged == distinct, "the log lost or repeated lines: \(logged)")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func aSwitchOverUnderLoadWithoutDurability() async throws {
        let r = try await Failover(durable: false, jobs: 200).run()
        // Asynchronous replication may lose what the old master took in its last moments: counted, not hidden.
        #expect(r.neverEnded + r.lostResults <= r.jobs / 10, "the farm did not recover from the failover: \(r)")
    }

    @Test func aSwitchOverUnderLoadWithReplicaDurability() async throws {
        let r = try await Failover(durable: true, jobs: 200).run()
        #expect(r.neverEnded == 0, "\(r)")
        #expect(r.lostResults == 0, "\(r)")
    }

    @Test func aKilledMasterUnderLoadWithoutDurability() async throws {
        let r = try await Failover(durable: false, jobs: 200, kill: true).run()
        #expect(r.neverEnded + r.lostResults <= r.jobs / 10, "the farm did not recover from the failover: \(r)")
    }

    @Test func aKilledMasterUnderLoadWithReplicaDurability() async throws {
        let r = try await Failover(durable: true, jobs: 200, kill: true).run()
        #expect(r.neverEnded == 0, "\(r)")
        #expect(r.lostResults == 0, "\(r)")
    }
}

func sentinelConfig(_ env: TestEnvironment, _ s: LocalSentinels, workers: Int, extra: String = "") throws -> String {
    let path = try env.writeConfig(workers: workers, modes: ["chat": 8], extra: extra)
    let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "redis: \(env.redisURL)\n", with: "redis: \(s.url)\n")
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// One failover under load: a farm of two workers runs `jobs` streaming jobs through the sentinel URL;
/// once a quarter has ended, the master is switched over (SENTINEL FAILOVER) or killed with SIGKILL.
struct Failover {
    struct Report: CustomStringConvertible {
        var jobs = 0, neverEnded = 0, doubled = 0, lostResults = 0, resultsBefore = 0, seenTwice = 0
        var seconds = 0.0
        var label = ""
        var description: String {
            "\(label): \(jobs) jobs, never ended \(neverEnded), two terminal events in the log \(doubled), "
                + "two different terminal events seen live \(seenTwice), results lost \(lostResults) "
                + "of \(resultsBefore) written before the failover, \(String(format: "%.1f", seconds)) s"
        }
    }

    let durable: Bool
    let jobs: Int
    var kill = false

    func run() async throws -> Report {
        let env = try TestEnvironment("failover")
        let s = try LocalSentinels(directory: env.dir + "/sentinel")
        defer { s.stop() }
        let config = try sentinelConfig(env, s, workers: 2, extra: """
            lease_ttl_s: 10
            max_attempts: 6
            retry_base_s: 0.05
            retry_max_s: 0.5
            durability: \(durable ? "replica" : "none")

            """)
        // Subscribers on both nodes see what each master published, also what a former master took after the switch.
        let live = LiveTerminals(ports: Array(s.nodes.keys), pattern: env.key("{fo-*}:tokens"))
        defer { live.stop() }
        let farm = try env.start(["farm", "--config", config])
        let t0 = Date()
        let ids = (0..<jobs).map { "fo-\($0)" }
        let first = try PlainRedis(port: s.masterPort() ?? 0)
        for id in ids { try first.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=30,delay_ms=10")) }
        // The producer's own writes are not what is measured: they reach the replica before the failover.
        #expect(try first.run("WAIT", "1", "5000") == .int(1))
        let resultKeys = env.key("{fo-*}:result")
        try env.until("a quarter of the jobs done", timeout: 60) { (try first.run("KEYS", resultKeys).array?.count ?? 0) >= jobs / 4 }
        let before = Set(try first.run("KEYS", resultKeys).array?.compactMap(\.string) ?? [])
        if kill { try await s.killMaster() } else { try s.failover() }

        // Count on the new master until every job ended, or nothing moved for 15 s (a job stuck in a live
        // worker's in-flight list never ends by itself; with durability, jobs wait until the sentinels made
        // the former master a replica again, about 10 s after a switch-over).
        var report = Report(jobs: jobs, resultsBefore: before.count)
        report.label = "\(kill ? "SIGKILL of the master" : "SENTINEL FAILOVER"), durability \(durable ? "replica" : "none")"
        var lastEnded = -1
        var lastChange = Date()
        let deadline = Date().addingTimeInterval(90)
        while true {
            let r = try PlainRedis(port: s.masterPort() ?? 0)
            var never = 0, doubled = 0
            for id in ids {
                let n = try r.terminalLinesCount(env: env, id: id)
                if n == 0 { never += 1 } else if n > 1 { doubled += 1 }
            }
            report.neverEnded = never
            report.doubled = doubled
            let ended = jobs - never
            if ended != lastEnded { (lastEnded, lastChange) = (ended, Date()) }
            if never == 0 || Date().timeIntervalSince(lastChange) > 15 || Date() > deadline { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let r = try PlainRedis(port: s.masterPort() ?? 0)
        report.lostResults = try before.filter { try r.run("EXISTS", $0) != .int(1) }.count
        report.seconds = Date().timeIntervalSince(t0)
        report.seenTwice = live.jobsSeenTwice()
        print("sentinel failover: \(report)")
        farm.signal(SIGTERM)
        _ = try? await env.waitExit(farm, timeout: 30)
        #expect(!env.log().contains("died ("), "a worker crashed: \(env.log().suffix(2000))")
        return report
    }
}

/// Terminal events as subscribers saw them, one thread per node; a line seen on both nodes counts once.
final class LiveTerminals: @unchecked Sendable {  // `seen` and `stopped` guarded by `lock`
    private let lock = NSLock()
    private var seen: [String: Set<String>] = [:]
    private var stopped = false

    init(ports: [Int], pattern: String) {
        for port in ports { Thread { self.listen(port: port, pattern: pattern) }.start() }
    }

    func stop() { lock.withLock { stopped = true } }

    func jobsSeenTwice() -> Int { lock.withLock { seen.values.filter { $0.count > 1 }.count } }

    private func listen(port: Int, pattern: String) {
        var client: PlainRedis?
        while !lock.withLock({ stopped }) {
            do {
                if client == nil {
                    client = try PlainRedis(port: port)
                    try client!.run("PSUBSCRIBE", pattern)
                }
                guard let msg = try client!.next(timeout: 0.2)?.array, msg.count == 4, let channel = msg[2].string,
                      let payload = msg[3].string, let open = channel.firstIndex(of: "{"), let close = channel.firstIndex(of: "}") else { continue }
                let id = String(channel[channel.index(after: open)..<close])
                for line in payload.split(separator: "\n") where line.contains(#""type":"done""#) || line.contains(#""type":"error""#) {
                    lock.withLock { _ = seen[id, default: []].insert(String(line)) }
                }
            } catch {
                client = nil
                usleep(20_000)
            }
        }
    }
}
