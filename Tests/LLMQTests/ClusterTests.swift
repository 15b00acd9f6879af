import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// The farm on a Redis Cluster (3 masters, 1 replica each, real processes on loopback):
/// routing by slot, sharded pub/sub, the reaper's split settle, and the chaos cases
/// (workers killed, a master killed and its replica promoted, a slot migrated under load)
/// with the usual accounting: jobs that never ended, jobs with two terminal events, and
/// samples that saw one job in two workers' in-flight lists.
@Suite(.serialized) struct ClusterTests {
    @Test func slotsFollowRedisClusterHashTags() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        #expect(ClusterSlot.of("123456789") == 12739)
        #expect(ClusterSlot.of("foo") == 12182)
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("user1000"))
        #expect(ClusterSlot.of("foo{}{bar}") == ClusterSlot.of("foo{}{bar}"))
        #expect(ClusterSlot.of("foo{}{bar}") != ClusterSlot.of("bar"))
        #expect(ClusterSlot.of("foo{{bar}}zap") == ClusterSlot.of("{bar"))
        #expect(ClusterSlot.of("llmq:{chat}:queue") == ClusterSlot.of("chat"))
    }

    @Test func clusterURLsParseAndRejectWhatACLusterCannotDo() throws {
        let u = try RedisURL("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002", environment: [:])
        #expect(u.cluster == [.init(host: "10.0.0.1", port: 7000), .init(host: "10.0.0.2", port: 6379), .init(host: "::1", port: 7002)])
        #expect(u.password == "s3cret" && u.isCluster)
        #expect(u.description == "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:6379,[::1]:7002")
        #expect(throws: LLMQError.self) { try RedisURL("redis+cluster://a:1/3", environment: [:]) }
        #expect(throws: LLMQError.self) { try RedisURL("redis+cluster://", environment: [:]) }
        #expect(throws: LLMQError.self) { try RedisURL("redis+cluster://a:notaport", environment: [:]) }
        #expect(PubSub.resolve(nil, for: u) == .sharded)
        #expect(PubSub.resolve(nil, for: try RedisURL("redis://x:1", environment: [:])) == .classic)
        #expect(PubSub.resolve(.classic, for: u) == .classic)
    }

    @Test func theConfigurationChoosesPubSubAndRejectsWhatItCannotRead() throws {
        let shipped = try ConfigLoader.load(path: "\(TestEnvironment.packageRoot)/Ops/compose/farm-cluster.yaml", environment: [:])
        try ConfigLoader.validate(shipped, source: "farm-cluster.yaml")
        #expect(shipped.pubsub == .sharded && shipped.keys.pubsub == .sharded)
        let dir = NSTemporaryDirectory() + "llmq-cluster-config-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "redis: \"redis+cluster://127.0.0.1:7000\"\n".write(toFile: dir + "/a.yaml", atomically: true, encoding: .utf8)
        #expect(try ConfigLoader.load(path: dir + "/a.yaml", environment: [:]).keys.pubsub == .sharded)
        try "redis: \"redis+cluster://127.0.0.1:7000\"\npubsub: classic\n".write(toFile: dir + "/b.yaml", atomically: true, encoding: .utf8)
        #expect(try ConfigLoader.load(path: dir + "/b.yaml", environment: [:]).keys.pubsub == .classic)
        #expect(try ConfigLoader.load(path: dir + "/a.yaml", environment: ["LLMQ_REDIS_URL": "redis://h:1"]).keys.pubsub == .classic)
        try "pubsub: loud\n".write(toFile: dir + "/c.yaml", atomically: true, encoding: .utf8)
        #expect(throws: LLMQError.self) { try ConfigLoader.load(path: dir + "/c.yaml", environment: [:]) }
    }

    @Test func aChatJobStreamsOverShardedPubSubToLogAndResult() async throws {
        let f = try ClusterFarm("c-chat")
        let farm = try f.startFarm()
        let id = "cl-42"
        // An outside subscriber that knows only redis: SSUBSCRIBE on the node owning {ID}.
        let owner = try f.cluster.master(for: f.env.key("{\(id)}:tokens"))
        let sharded = try f.cluster.client(owner)
        #expect(try sharded.run("SSUBSCRIBE", f.env.key("{\(id)}:tokens")).array?.first == .string("ssubscribe"))
        let watched = try RequestWatcher.subscribe(url: f.url, keys: f.keys, id: id, timeout: 30)
        try Producer(url: f.url, keys: f.keys).push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=12,delay_ms=2").utf8), mode: "chat")
        var lines: [String] = []
        for await line in watched { lines.append(line) }
        let types = lines.map { (try? JSONValue.parse(Array($0.utf8)))?["type"]?.stringValue ?? "?" }
        #expect(types == ["start"] + Array(repeating: "chunk", count: 12) + ["done"], "\(lines)")
        #expect(lines.map { (try? JSONValue.parse(Array($0.utf8)))?["seq"]?.intValue } == Array(0...13).map { Optional($0) })

        var pushed: [String] = []
        let end = Date().addingTimeInterval(10)
        while pushed.count < lines.count, Date() < end {
            guard let m = try sharded.next(timeout: 0.5), let parts = m.array, parts.count == 3 else { continue }
            #expect(parts[0] == .string("smessage"))
            pushed += (parts[2].string ?? "").split(separator: "\n").map(String.init)
        }
        #expect(pushed == lines, "the SSUBSCRIBE on node \(owner) saw \(pushed.count) of \(lines.count) lines")

        let log = try f.redis.command(["XRANGE", f.env.key("{\(id)}:log"), "-", "+"]).array ?? []
        #expect(log.compactMap { $0.array?[1].array?[1].string } == lines)
        let result = try JSONValue.parse(try #require(try f.redis.command(["GET", f.env.key("{\(id)}:result")]).bytes))
        #expect(result["status"] == "done")
        try f.env.until("the job acknowledged") { try f.inflightIDs().isEmpty }

        // The client commands work on the cluster URL too.
        let tail = try await f.cli(["tail", "--redis", f.cluster.urlString, "--prefix", f.env.prefix, "--json", "--no-follow", id])
        #expect(tail.split(separator: "\n").map(String.init) == lines, "\(tail)")
        let stats = try await f.cli(["stats", "--redis", f.cluster.urlString, "--prefix", f.env.prefix])
        #expect(stats.contains("chat"), "\(stats)")
        try await f.stop(farm)
    }

    @Test func manyJobsAcrossEverySlotOwnerEndOnce() async throws {
        let f = try ClusterFarm("c-many")
        let farm = try f.startFarm(workers: 2)
        let ids = (0..<150).map { "m-\($0)" }
        let owners = Set(try ids.map { try f.cluster.master(for: f.env.key("{\($0)}:log")) })
        #expect(owners.count == 3, "the ids should spread over the three masters, got \(owners)")
        let p = try Producer(url: f.url, keys: f.keys)
        for id in ids { try p.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=5,delay_ms=1").utf8), mode: "chat") }
        let report = try await f.account(ids, name: "cluster: 150 jobs")
        #expect(report.zero.isEmpty && report.doubled.isEmpty && report.done == ids.count, "\(report)")
        try await f.stop(farm)
    }

    @Test func cancellingARunningJobOnTheCluster() async throws {
        let f = try ClusterFarm("c-cancel")
        let farm = try f.startFarm()
        let id = "slow-1"
        let watched = try RequestWatcher.subscribe(url: f.url, keys: f.keys, id: id, timeout: 30)
        let p = try Producer(url: f.url, keys: f.keys)
        try p.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=400,delay_ms=20").utf8), mode: "chat")
        var lines: [String] = []
        var cancelled = false
        for await line in watched {
            lines.append(line)
            if !cancelled && line.contains(#""type":"chunk""#) {
                try p.cancel(id: id)
                cancelled = true
            }
        }
        let last = try JSONValue.parse(Array(try #require(lines.last).utf8))
        #expect(last["type"] == "error" && last["code"] == "cancelled", "\(lines.suffix(3))")
        #expect(lines.count < 100, "the cancel took \(lines.count) lines to land")
        try await f.stop(farm)
    }

    /// The state a worker leaves when it dies between its terminal write ({ID} node) and its
    /// acknowledgement ({MODE} node): the job is still in its in-flight list, its log already
    /// ends with the terminal event. The reaper must only acknowledge it; a job of the same dead
    /// worker without a terminal event goes back to the queue and runs.
    @Test func aCrashBetweenTerminalWriteAndAcknowledgementEndsTheJobOnce() async throws {
        let f = try ClusterFarm("c-split")
        let ghost = "ghost-\(UUID().uuidString.prefix(4))"
        let finished = "fin-1", unfinished = "unf-1"
        let inflight = f.env.key("{chat}:inflight:\(ghost)")
        for id in [finished, unfinished] {
            try f.redis.command(["LPUSH", inflight, TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=3")])
        }
        let done = #"{"type":"done","id":"\#(finished)","seq":0,"finish_reason":"stop","usage":{"prompt_tokens":1,"completion_tokens":0},"duration_ms":1.0}"#
        try f.redis.command(["XADD", f.env.key("{\(finished)}:log"), "*", "line", done])
        try f.redis.command(["SET", f.env.key("{\(finished)}:result"), #"{"id":"\#(finished)","status":"done","run":"r"}"#])
        try f.redis.command(["ZADD", f.env.key("workers"), "1", ghost])
        let farm = try f.startFarm(extra: "lease_ttl_s: 1\n")
        let report = try await f.account([finished, unfinished], name: "cluster: crash between writes")
        #expect(report.zero.isEmpty && report.doubled.isEmpty, "\(report)")
        try f.env.until("the dead worker's list emptied") { (try f.redis.command(["LLEN", inflight]).integer ?? -1) == 0 }
        let finishedLog = try f.redis.command(["XRANGE", f.env.key("{\(finished)}:log"), "-", "+"]).array ?? []
        #expect(finishedLog.count == 1, "the finished job ran again: \(finishedLog)")
        #expect(f.env.log().contains("acknowledged a finished job a lost worker still held"), "\(f.env.log().suffix(2000))")
        try await f.stop(farm)
    }

    @Test func killNineOfWorkersOnTheCluster() async throws {
        let f = try ClusterFarm("c-kill")
        let farm = try f.startFarm(workers: 3)
        let ids = (0..<60).map { "k-\($0)" }
        let sampler = f.startSampler()
        let p = try Producer(url: f.url, keys: f.keys)
        for id in ids { try p.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=40,delay_ms=10").utf8), mode: "chat") }
        try await f.waitProgress(ids, 0.1)
        var kills = 0
        for _ in 0..<4 {
            guard let victim = TestEnvironment.children(of: farm.pid).randomElement() else { continue }
            kill(victim, SIGKILL)
            kills += 1
            try await Task.sleep(for: .milliseconds(300))
        }
        let report = try await f.account(ids, name: "cluster: kill -9 workers", disruptions: kills, sampler: sampler)
        #expect(report.zero.isEmpty && report.doubled.isEmpty && report.twoHolders == 0, "\(report)\n\(f.env.log().suffix(1500))")
        try await f.stop(farm)
    }

    @Test func killNineOfAMasterWhileItsReplicaTakesOver() async throws {
        let f = try ClusterFarm("c-failover")
        let farm = try f.startFarm(workers: 2)
        let ids = (0..<60).map { "f-\($0)" }
        let sampler = f.startSampler()
        let p = try Producer(url: f.url, keys: f.keys)
        for id in ids { try p.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=40,delay_ms=10").utf8), mode: "chat") }
        // The queue's master: its loss stops every fetch until the replica is promoted.
        let victim = try f.cluster.master(for: f.env.key("{chat}:queue"))
        // Nothing pushed may be lost to asynchronous replication before the kill.
        _ = try f.cluster.client(victim).run("WAIT", "1", "2000")
        try await f.waitProgress(ids, 0.2)
        f.cluster.kill(victim)
        let killedAt = Date()
        try f.cluster.waitUntilHealthy(masters: 3, timeout: 30)
        let promotedIn = Date().timeIntervalSince(killedAt)
        let report = try await f.account(ids, name: "cluster: kill -9 master", disruptions: 1, sampler: sampler,
                                         note: String(format: "replica promoted in %.1f s", promotedIn))
        // Asynchronous replication may lose the writes of the last instant before the kill; the report
        // shows them. Everything that reached the replica must end exactly once.
        #expect(report.zero.count <= 2 && report.doubled.count <= 2 && report.twoHolders == 0, "\(report)\n\(f.env.log().suffix(2000))")
        #expect(report.done >= ids.count - 2, "\(report)")
        try await f.stop(farm)
    }

    @Test func aSlotMigratedWhileJobsRunLosesNothing() async throws {
        let f = try ClusterFarm("c-reshard")
        let farm = try f.startFarm(workers: 2)
        let ids = (0..<80).map { "r-\($0)" }
        let sampler = f.startSampler()
        let p = try Producer(url: f.url, keys: f.keys)
        for id in ids { try p.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=30,delay_ms=10").utf8), mode: "chat") }
        try await f.waitProgress(ids, 0.1)
        // The queue's slot, with the queue and every in-flight list in it, moves to another master key by key.
        let slot = ClusterSlot.of(f.env.key("{chat}:queue"))
        let from = try f.cluster.owner(ofSlot: slot)
        let to = try f.cluster.masters().first { $0 != from }!
        let moved = try f.cluster.migrate(slot: slot, to: to, pauseMicroseconds: 20_000)
        #expect(try f.cluster.owner(ofSlot: slot) == to)
        // And a request's slot too, while it streams.
        let busy = ids[ids.count - 1]
        let reqSlot = ClusterSlot.of(f.env.key("{\(busy)}:log"))
        let reqTo = try f.cluster.masters().first { $0 != (try? f.cluster.owner(ofSlot: reqSlot)) }!
        try f.cluster.migrate(slot: reqSlot, to: reqTo)
        let report = try await f.account(ids, name: "cluster: slot migrated", disruptions: 2, sampler: sampler,
                                         note: "\(moved) keys of the queue's slot moved")
        #expect(report.zero.isEmpty && report.doubled.isEmpty && report.twoHolders == 0, "\(report)\n\(f.env.log().suffix(2000))")
        #expect(report.done == ids.count, "\(report)")
        try await f.stop(farm)
    }
}

/// One cluster scenario's world: the cluster, `llmq sim`, a prefix, a farm configuration.
final class ClusterFarm: @unchecked Sendable {  // used by one test task, plus the sampler thread
    let env: TestEnvironment
    let cluster: LocalRedisCluster
    let url: RedisURL
    let keys: Keys
    let redis: RedisConnection
    let name: String

    struct Report: CustomStringConvertible {
        var zero: [String] = []
        var doubled: [String] = []
        var twoHolders = 0
        var done = 0
        var description: String {
            "never ended \(zero.count) \(zero.prefix(5)), two terminal events \(doubled.count) \(doubled.prefix(5)), two holders \(twoHolders), done \(done)"
        }
    }

    init(_ name: String) throws {
        self.name = name
        env = try TestEnvironment(name)
        cluster = try LocalRedisCluster(directory: env.dir + "/cluster")
        url = try RedisURL(cluster.urlString)
        keys = Keys(prefix: env.prefix, pubsub: .sharded)
        redis = try RedisConnection(url)
    }

    func startFarm(workers: Int = 1, extra: String = "") throws -> ChildProcess {
        let path = try env.writeConfig(
            workers: workers, modes: ["chat": 8],
            extra: "max_attempts: 6\nretry_base_s: 0.05\nretry_max_s: 0.5\nrestart_backoff_max_s: 0.2\n" + extra)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "redis: \(env.redisURL)\n", with: "redis: \"\(cluster.urlString)\"\n")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try env.start(["farm", "--config", path])
    }

    func stop(_ farm: ChildProcess) async throws {
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log().suffix(1500))")
    }

    /// Runs an llmq client command and returns its output.
    func cli(_ args: [String]) async throws -> String {
        let log = "cli-\(UUID().uuidString.prefix(6)).log"
        let p = try env.start(args, log: log)
        let status = try await env.waitExit(p, timeout: 30)
        let out = env.log(log)
        #expect(ChildProcess.exitCode(status) == 0, "llmq \(args.joined(separator: " ")): \(out)")
        return out
    }

    /// Ids of the jobs in any in-flight list of chat (all on the {chat} node).
    func inflightIDs() throws -> [String] {
        let script = "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do for _, j in ipairs(redis.call('LRANGE', k, 0, -1)) do out[#out + 1] = k .. ' ' .. j end end return out"
        let r = try redis.command(["EVAL", script, "1", keys.queue("chat"), "\(env.prefix):{chat}:inflight:*"])
        return (r.array ?? []).compactMap(\.string)
    }

    func terminalLines(_ id: String, on c: RedisConnection) throws -> Int {
        let entries = try c.command(["XRANGE", keys.log(id), "-", "+"]).array ?? []
        return entries.filter { e in
            guard let line = e.array?[1].array?[1].string else { return false }
            return line.contains(#""type":"done""#) || line.contains(#""type":"error""#)
        }.count
    }

    func waitProgress(_ ids: [String], _ fraction: Double, timeout: Double = 60) async throws {
        let end = Date().addingTimeInterval(timeout)
        while true {
            let c = try RedisConnection(url)
            let n = try ids.filter { try terminalLines($0, on: c) > 0 }.count
            if Double(n) >= fraction * Double(ids.count) { return }
            guard Date() < end else { throw TestFailure("\(name): load never reached \(Int(fraction * 100))%") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Samples the in-flight lists (one script, one instant) and counts samples with one id in two lists.
    func startSampler() -> Sampler {
        let s = Sampler()
        let url = self.url, keys = self.keys, prefix = env.prefix
        let t = Thread {
            let script = "local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do for _, j in ipairs(redis.call('LRANGE', k, 0, -1)) do out[#out + 1] = k; out[#out + 1] = j end end return out"
            var c: RedisConnection?
            while !s.stopped {
                if c == nil { c = try? RedisConnection(url, connectTimeout: 1) }
                guard let flat = (try? c?.command(["EVAL", script, "1", keys.queue("chat"), "\(prefix):{chat}:inflight:*"]))?.array else {
                    c = nil
                    usleep(50_000)
                    continue
                }
                var owner: [String: String] = [:]
                var clash = false
                for i in stride(from: 0, to: flat.count - 1, by: 2) {
                    guard let key = flat[i].string, let raw = flat[i + 1].bytes,
                          let id = (try? JSONValue.parse(raw))?["id"]?.stringValue else { continue }
                    if let other = owner[id], other != key { clash = true }
                    owner[id] = key
                }
                if clash { s.recordClash() }
                usleep(20_000)
            }
        }
        t.start()
        return s
    }

    /// Waits until every job has a terminal line (or the timeout), then counts and prints a report row.
    func account(_ ids: [String], name: String, disruptions: Int = 0, sampler: Sampler? = nil, note: String = "",
                 timeout: Double = 90) async throws -> Report {
        let t0 = Date()
        let end = t0.addingTimeInterval(timeout)
        var report = Report()
        while true {
            report = Report()
            if let c = try? RedisConnection(url) {
                for id in ids {
                    let n = (try? terminalLines(id, on: c)) ?? 0
                    if n == 0 { report.zero.append(id) } else if n > 1 { report.doubled.append(id) }
                }
            } else {
                report.zero = ids
            }
            if report.zero.isEmpty || Date() > end { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        sampler?.stop()
        report.twoHolders = sampler?.doubleHeld ?? 0
        let c = try RedisConnection(url)
        for id in ids where (try c.command(["GET", keys.result(id)]).string ?? "").contains(#""status":"done""#) { report.done += 1 }
        print("| \(name) | \(ids.count) jobs | never ended \(report.zero.count) | two terminal events \(report.doubled.count) | "
              + "two holders \(report.twoHolders) | done \(report.done) | disruptions \(disruptions) | "
              + String(format: "%.1f s", Date().timeIntervalSince(t0)) + (note.isEmpty ? "" : " | \(note)") + " |")
        return report
    }
}

final class Sampler: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var _stopped = false
    private var clashes = 0
    var stopped: Bool { lock.withLock { _stopped } }
    var doubleHeld: Int { lock.withLock { clashes } }
    func stop() { lock.withLock { _stopped = true } }
    func recordClash() { lock.withLock { clashes += 1 } }
}
