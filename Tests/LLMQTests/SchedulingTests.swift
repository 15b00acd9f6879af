import Foundation
import LLMQ
import LLMQTestSupport
import Logging
import Testing

/// Shards per mode and the fair scheduler (priorities, weighted turns, tenant limits), first
/// as scripts against a real redis-server, then through real farms.
@Suite(.serialized) struct SchedulingTests {
    // MARK: the shard function

    @Test func sha1MatchesTheStandardVectors() {
        func hex(_ s: String) -> String { SHA1.digest(Array(s.utf8)).map { String(format: "%02x", $0) }.joined() }
        #expect(hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(String(repeating: "a", count: 1000)) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }

    @Test func shardOfAnIdIsWhatTheRedisCliRecipeComputes() throws {
        let env = try TestEnvironment("shardfn")
        let redis = try env.client()
        let recipe = "return tonumber(string.sub(redis.sha1hex(ARGV[1]),1,8),16) % tonumber(ARGV[2])"
        var seen: [Int: Set<Int>] = [:]
        for i in 0..<200 {
            let id = "req-\(i)-\(i * 7919)"
            for k in [2, 3, 7] {
                let fromRedis = try redis.run("EVAL", recipe, "0", id, String(k)).int
                let ours = QueueFamily.shard(of: id, shards: k)
                #expect(fromRedis == ours, "id \(id), \(k) shards")
                seen[k, default: []].insert(ours)
            }
        }
        // 200 ids reach every shard.
        #expect(seen[2]?.count == 2 && seen[3]?.count == 3 && seen[7]?.count == 7)
        #expect(QueueFamily.shard(of: "anything", shards: 1) == 0)
        let keys = Keys(prefix: "llmq")
        #expect(QueueFamily.all("chat", shards: 1, keys: keys).map(\.queue) == [keys.queue("chat")])
        #expect(QueueFamily.all("chat", shards: 2, keys: keys).map(\.queue) == ["llmq:{chat~0}:queue", "llmq:{chat~1}:queue"])
    }

    @Test(arguments: [
        ("modes: {chat: {concurrency: 2, shards: 0}}", "modes.chat.shards must be from 1 to 1024"),
        ("modes: {chat: {concurrency: 2, schedule: random}}", "schedule"),
        ("tenants: {acme: {weight: 0}}", "tenants.acme.weight must be from 1 to 1000"),
        ("tenants: {\"bad tenant\": {weight: 1}}", "tenants.bad tenant is not a valid tenant"),
        ("tenant_default: {max_concurrent: -1}", "tenant_default.max_concurrent must be from 0"),
    ])
    func schedulingConfigurationErrorsNameTheKey(_ text: String, _ message: String) throws {
        let path = NSTemporaryDirectory() + "llmq-sched-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let e = #expect(throws: LLMQError.self) { try ConfigLoader.load(path: path, environment: [:]) }
        #expect(e?.message.contains(message) == true, "\(e?.message ?? "no error")")
        let good = NSTemporaryDirectory() + "llmq-sched-\(UUID().uuidString).yaml"
        try "modes: {chat: {concurrency: 2, shards: 3, schedule: fair}}\ntenants: {acme: {weight: 3, max_concurrent: 20}}\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: good) }
        let c = try ConfigLoader.load(path: good, environment: [:])
        #expect(c.modes["chat"] == ModeConfig(concurrency: 2, shards: 3, schedule: .fair))
        #expect(c.tenants["acme"] == TenantConfig(weight: 3, maxConcurrent: 20))
        #expect(c.families("chat").map(\.tag) == ["{chat~0}", "{chat~1}", "{chat~2}"])
    }

    // MARK: the fair scripts alone

    /// One fair family in a fresh Redis, taken from and released as a worker would.
    final class FairBench {
        let env: TestEnvironment
        let c: RedisConnection
        let family: QueueFamily
        let fair: FairSchedule
        let worker = "w1"

        init(_ name: String, tenants: [String: TenantConfig], fallback: TenantConfig = TenantConfig()) throws {
            env = try TestEnvironment(name)
            c = try RedisConnection(try RedisURL(env.redisURL))
            family = QueueFamily(mode: "chat", shard: nil, keys: Keys(prefix: env.prefix))
            fair = FairSchedule(tenants: tenants, fallback: fallback)
        }

        func push(_ id: String, tenant: String? = nil, priority: String? = nil) throws {
            var extra = ""
            if let tenant { extra += #","tenant":"\#(tenant)""# }
            if let priority { extra += #","priority":"\#(priority)""# }
            try c.command(["LPUSH", family.queue, TestEnvironment.chatJob(id: id, model: "m", extra: extra)])
        }

        /// Takes up to `want` jobs; returns (id, tenant bucket) in the order given.
        func take(_ want: Int) throws -> [(id: String, tenant: String, raw: [UInt8])] {
            var cmd: [UInt8] = []
            fair.takeCommand(family, worker: worker, want: want, into: &cmd)
            try cmd.withUnsafeBufferPointer { b in try c.appendEncoded(b) }
            let r = try c.reply()
            guard let a = r.array else { throw TestFailure("take answered \(r)") }
            return stride(from: 0, to: a.count - 1, by: 2).map { i in
                (JobParser.peekID(a[i].bytes ?? []) ?? "?", a[i + 1].string ?? "?", a[i].bytes ?? [])
            }
        }

        func acknowledge(_ raw: [UInt8], tenant: String) throws {
            var cmd: [UInt8] = []
            _ = HeldJob(raw: raw, family: family, worker: worker, tenant: tenant).acknowledge(into: &cmd)
            try cmd.withUnsafeBufferPointer { b in try c.appendEncoded(b) }
            if case .error(let e) = try c.reply() { throw TestFailure("ack failed: \(e)") }
        }

        func running(_ tenant: String) throws -> Int { try c.command(["HGET", family.running, tenant]).integer ?? 0 }
    }

    @Test func highBeforeNormalBeforeLowInOneTake() throws {
        let b = try FairBench("prio", tenants: [:])
        try b.push("l1", priority: "low")
        try b.push("n1")
        try b.push("h1", priority: "high")
        try b.push("l2", priority: "low")
        try b.push("n2", priority: "normal")
        try b.push("h2", priority: "high")
        try b.push("junk-priority", priority: "urgent")
        try b.c.command(["LPUSH", b.family.queue, "not json at all"])
        let got = try b.take(10)
        // Unreadable jobs go on as normal priority, tenant "", so the worker's parser still answers them.
        #expect(got.map(\.id) == ["h1", "h2", "n1", "n2", "junk-priority", "?", "l1", "l2"], "\(got.map(\.id))")
        #expect(try b.c.command(["LLEN", b.family.inflight(worker: b.worker)]).integer == 8)
        #expect(try b.c.command(["LLEN", b.family.queue]).integer == 0)
        // One at a time gives the same order.
        for id in ["h3", "n3", "l3"] { try b.push(id, priority: id.hasPrefix("h") ? "high" : id.hasPrefix("l") ? "low" : nil) }
        #expect(try (0..<3).map { _ in try b.take(1).first?.id } == ["h3", "n3", "l3"])
    }

    @Test func tenantsTakeTurnsByWeight() throws {
        let b = try FairBench("weights", tenants: ["acme": TenantConfig(weight: 3), "beta": TenantConfig(weight: 1)])
        for i in 0..<12 { try b.push("a\(i)", tenant: "acme") }
        for i in 0..<4 { try b.push("b\(i)", tenant: "beta") }
        for i in 0..<2 { try b.push("x\(i)") }
        let got = try (0..<18).flatMap { _ in try b.take(1) }
        let order = got.map { $0.tenant.isEmpty ? "-" : String($0.tenant.prefix(1)) }.joined()
        // acme 3 in a row, then beta 1, then the jobs without a tenant (weight 1), in turn; each tenant in its own order.
        #expect(order == "aaab-aaab-aaabaaab", "\(order)")
        #expect(got.filter { $0.tenant == "acme" }.map(\.id) == (0..<12).map { "a\($0)" })
        // Taking many at once follows the same turns.
        for i in 0..<6 { try b.push("c\(i)", tenant: "acme") }
        for i in 0..<2 { try b.push("d\(i)", tenant: "beta") }
        #expect(try b.take(8).map { String($0.tenant.prefix(1)) }.joined() == "aaabaaab")
    }

    @Test func aTenantAtItsLimitIsPassedOverAndWokenWhenItsJobEnds() throws {
        let b = try FairBench("limit", tenants: ["acme": TenantConfig(weight: 5, maxConcurrent: 2)])
        for i in 0..<5 { try b.push("a\(i)", tenant: "acme") }
        for i in 0..<3 { try b.push("b\(i)", tenant: "other-co") }
        let first = try b.take(10)
        #expect(first.map(\.id) == ["a0", "a1", "b0", "b1", "b2"], "\(first.map(\.id))")
        #expect(try b.running("acme") == 2)
        #expect(try b.take(10).isEmpty)
        // The queue is empty: a fetcher would now block on it. Ending one of acme's jobs wakes it.
        #expect(try b.c.command(["LLEN", b.family.queue]).integer == 0)
        try b.acknowledge(first[0].raw, tenant: "acme")
        #expect(try b.c.command(["LLEN", b.family.queue]).integer == 1)
        #expect(try b.running("acme") == 1)
        #expect(try b.take(10).map(\.id) == ["a2"])
        #expect(try b.c.command(["LLEN", b.family.queue]).integer == 0)
        // Acknowledging twice gives back once.
        try b.acknowledge(first[0].raw, tenant: "acme")
        #expect(try b.running("acme") == 2)
        let held = try b.c.command(["HGET", b.family.runningBy(worker: b.worker), "acme"]).integer
        #expect(held == 2)
    }

    @Test func theReaperGivesALostWorkersSharesBack() throws {
        let b = try FairBench("repair", tenants: ["acme": TenantConfig(maxConcurrent: 1)])
        try b.push("a0", tenant: "acme")
        try b.push("a1", tenant: "acme")
        #expect(try b.take(5).map(\.id) == ["a0"])
        #expect(try b.take(5).isEmpty)
        let reaper = Reaper(keys: b.family.keys, url: try RedisURL(b.env.redisURL), me: "reaper", defaultMaxAttempts: 3, resultTTL: 60,
                            logTTL: 60, logger: .init(label: "test"))
        #expect(try reaper.recover(worker: b.worker, modes: ["chat"], connection: b.c) == 1)
        #expect(try b.running("acme") == 0)
        #expect(try b.c.command(["EXISTS", b.family.runningBy(worker: b.worker)]).integer == 0)
        // a0 is back with its attempt counted (ahead of a1 in acme's line), and the wake marker with it.
        let next = try b.take(5)
        #expect(next.map(\.id) == ["a0"], "\(next.map(\.id))")
        #expect(String(decoding: next[0].raw, as: UTF8.self).contains(#""attempts":1"#))
    }

    // MARK: through real farms

    func config(_ env: TestEnvironment, mode: String, extra: String = "", httpPort: Int = 0) throws -> String {
        let text = """
            redis: \(env.redisURL)
            prefix: \(env.prefix)
            workers: 1
            drain_timeout_s: 10
            restart_backoff_s: 0.1
            log_level: info
            http_port: \(httpPort)
            http_host: 127.0.0.1
            modes:
              \(mode)
            providers:
              sim: {kind: sim, base_url: "\(env.simURL)", timeout_s: 30, idle_timeout_s: 5}
            \(extra)
            """
        let path = "\(env.dir)/farm.yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Waits until every id ended, noting when each first showed a terminal event.
    func endTimes(_ events: EventCollector, _ ids: [String], timeout: Double) throws -> [String: Date] {
        var ended: [String: Date] = [:]
        try events.wait(timeout: timeout, what: "terminal events of \(ids.count) requests") { m in
            for id in ids where ended[id] == nil && m[id]?.contains(where: \.isTerminal) == true { ended[id] = Date() }
            return ended.count == ids.count
        }
        return ended
    }

    @Test func aFloodFromOneTenantDoesNotStarveAnothersFewJobs() async throws {
        let env = try TestEnvironment("flood")
        let path = try config(env, mode: "chat: {concurrency: 8, schedule: fair}", extra: "tenants: {acme: {weight: 1}, beta: {weight: 1}}")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", path])
        let redis = try env.client()
        try env.until("the worker is up") { (try redis.run("ZCARD", env.key("workers")).int ?? 0) > 0 }
        let c = try RedisConnection(try RedisURL(env.redisURL))
        let queue = env.key("{chat}:queue")
        // About 20 ms a job on 8 permits: the flood alone would take half a minute.
        let model = "sim/sim:tokens=1,first_ms=20"
        for i in 0..<10_000 {
            try c.append(["LPUSH", queue, TestEnvironment.chatJob(id: "a-\(i)", model: model, extra: #","tenant":"acme""#)])
            if i % 500 == 499 { for _ in 0..<500 { _ = try c.reply() } }
        }
        let pushed = Date()
        let ids = (0..<10).map { "b-\($0)" }
        for id in ids { try redis.run("LPUSH", queue, TestEnvironment.chatJob(id: id, model: model, extra: #","tenant":"beta""#)) }
        let ended = try endTimes(events, ids, timeout: 30)
        let waits = ids.map { ended[$0]!.timeIntervalSince(pushed) }
        let acmeDone = events.allIDs.filter { $0.hasPrefix("a-") && events.events($0).contains(where: \.isTerminal) }.count
        print("flood: beta's 10 jobs ended \(waits.map { String(format: "%.2f", $0) }.joined(separator: " ")) s after they were pushed, "
              + "behind 10,000 of acme's (\(acmeDone) of them ended by then)")
        #expect(waits.allSatisfy { $0 < 5 }, "beta waited \(waits)")
        #expect(acmeDone < 5_000, "the flood was mostly still waiting when beta's jobs ended")
        for id in ids { #expect(events.events(id).last?.type == "done", "\(events.events(id))") }
        // Stopped, not killed: a killed supervisor leaves its worker retrying a Redis the test tears down.
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log().suffix(1500))")
    }

    @Test func priorityOrderThroughAFarm() async throws {
        let env = try TestEnvironment("prio-farm")
        let path = try config(env, mode: "chat: {concurrency: 1, schedule: fair}")
        let events = try env.collector()
        let redis = try env.client()
        let queue = env.key("{chat}:queue")
        var ids: [String] = []
        for (i, p) in ["low", "normal", "high", "low", "high", "normal"].enumerated() {
            ids.append("\(p)-\(i)")
            try redis.run("LPUSH", queue, TestEnvironment.chatJob(id: "\(p)-\(i)", model: "sim/sim:tokens=1", extra: #","priority":"\#(p)""#))
        }
        let farm = try env.start(["farm", "--config", path])
        let ended = try endTimes(events, ids, timeout: 30)
        let order = ids.sorted { ended[$0]! < ended[$1]! }
        #expect(order == ["high-2", "high-4", "normal-1", "normal-5", "low-0", "low-3"], "\(order)")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func aTenantAtItsLimitDoesNotHoldUpOthers() async throws {
        let env = try TestEnvironment("limit-farm")
        let port = try FreePort.find()
        let path = try config(env, mode: "chat: {concurrency: 8, schedule: fair}", extra: "tenants: {acme: {weight: 4, max_concurrent: 2}}",
                              httpPort: port)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", path])
        let redis = try env.client()
        try env.until("the worker is up") { (try redis.run("ZCARD", env.key("workers")).int ?? 0) > 0 }
        let queue = env.key("{chat}:queue")
        let slow = (0..<6).map { "a-\($0)" }
        for id in slow {
            try redis.run("LPUSH", queue, TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=2,first_ms=2500", extra: #","tenant":"acme""#))
        }
        let quick = (0..<6).map { "q-\($0)" }
        for id in quick {
            try redis.run("LPUSH", queue, TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=1", extra: #","tenant":"zeta""#))
        }
        let pushed = Date()
        // acme's 6 slow jobs run 2 at a time; zeta's quick ones do not wait for them.
        let quickEnded = try endTimes(events, quick, timeout: 30)
        let quickWait = quickEnded.values.map { $0.timeIntervalSince(pushed) }.max() ?? 0
        let running = try redis.run("HGET", env.key("{chat}:running"), "acme").string.flatMap { Int($0) }
        #expect(quickWait < 2.0, "zeta waited \(quickWait) s behind acme's first 2.5 s round")
        #expect(running == 2)
        // Per-tenant metrics: acme by name, zeta (not configured) as other; acme's waiting ones sorted, not lost.
        let scrape = try OperationsTests.scrapeUntil(port, "acme's running jobs in the tenant gauges") { s in
            s.sum("llmq_tenant_running_jobs", ["mode": "chat", "tenant": "acme"]) == 2
                && s.sum("llmq_tenant_waiting_jobs", ["mode": "chat", "tenant": "acme"]) ?? 0 >= 1
                && s.sum("llmq_tenant_jobs_started_total", ["mode": "chat", "tenant": "other"]) == 6
        }
        #expect((scrape.sum("llmq_tenant_jobs_started_total", ["mode": "chat", "tenant": "acme"]) ?? 0) >= 2)
        #expect(scrape.sum("llmq_tenant_running_jobs", ["mode": "chat", "tenant": "zeta"]) == nil)
        let slowEnded = try endTimes(events, slow, timeout: 30)
        // Three rounds of two.
        let last = slowEnded.values.map { $0.timeIntervalSince(pushed) }.max() ?? 0
        #expect(last >= 7.5, "acme's last job ended after \(last) s: more than 2 ran at once")
        try env.until("the counters are back to zero") { try redis.run("HLEN", env.key("{chat}:running")) == .int(0) }
        print("limit: zeta's jobs ended within \(String(format: "%.2f", quickWait)) s; acme's 6 jobs at 2 at a time within \(String(format: "%.2f", last)) s")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func shardsAreAllFetchedWithinPermitsAndStatsSumThem() async throws {
        let env = try TestEnvironment("shards")
        let path = try config(env, mode: "chat: {concurrency: 2, shards: 3}")
        let events = try env.collector()
        let redis = try env.client()
        let keys = Keys(prefix: env.prefix)
        let producer = try Producer(url: try RedisURL(env.redisURL), keys: keys, shards: ["chat": 3])
        let ids = (0..<24).map { "s-\($0)" }
        for id in ids {
            try producer.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=2,first_ms=150").utf8), mode: "chat")
        }
        let families = QueueFamily.all("chat", shards: 3, keys: keys)
        let lengths = try families.map { try redis.run("LLEN", $0.queue).int ?? 0 }
        #expect(lengths.allSatisfy { $0 > 0 } && lengths.reduce(0, +) == 24, "\(lengths)")
        for (f, n) in zip(families, lengths) {
            let expected = ids.filter { QueueFamily.shard(of: $0, shards: 3) == f.shard }.count
            #expect(n == expected)
        }
        #expect(try redis.run("LLEN", keys.queue("chat")).int == 0)
        let inspector = try FarmInspector(url: try RedisURL(env.redisURL), keys: keys)
        inspector.shards = ["chat": 3]
        let before = try inspector.snapshot(modes: ["chat"]).modes.first { $0.mode == "chat" }
        #expect(before?.pending == 24 && before?.shards == 3)

        let farm = try env.start(["farm", "--config", path])
        var most = 0
        var done = false
        // Watches the in-flight lists while the jobs run: never more than the mode's 2 permits.
        try env.until("every job ended", timeout: 60) {
            let held = try families.map { f in try redis.run("KEYS", f.inflight(worker: "*")).array ?? [] }.flatMap { $0 }
            let n = try held.compactMap(\.string).map { try redis.run("LLEN", $0).int ?? 0 }.reduce(0, +)
            most = max(most, n)
            done = ids.allSatisfy { events.events($0).contains(where: \.isTerminal) }
            return done
        }
        #expect(most <= 2, "the worker held \(most) jobs at once with 2 permits")
        #expect(most >= 1)
        for id in ids { #expect(events.events(id).last?.type == "done") }
        // The worker announced the shards for tools without the configuration.
        #expect(try redis.run("HGET", keys.shards, "chat").string == "3")
        let announced = try FarmInspector(url: try RedisURL(env.redisURL), keys: keys)
        #expect(announced.shards == ["chat": 3])
        try env.until("every job acknowledged") { try announced.snapshot(modes: ["chat"]).inflightTotal == 0 }
        // `llmq stats` learns the shards from Redis alone.
        let stats = try env.start(["stats", "--json", "--redis", env.redisURL, "--prefix", env.prefix], log: "stats.log")
        #expect(ChildProcess.exitCode(try await env.waitExit(stats)) == 0)
        let snapshot = try JSONValue.parse(Array(env.log("stats.log").utf8))
        let chat = snapshot["modes"]?.arrayValue?.first { $0["mode"] == "chat" }
        #expect(chat?["shards"] == 3 && chat?["pending"] == 0 && chat?["inflight"] == 0, "\(env.log("stats.log"))")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }

    @Test func killNineOfAWorkerRepairsTheTenantCounters() async throws {
        let env = try TestEnvironment("sched-crash")
        let path = try config(env, mode: "chat: {concurrency: 4, schedule: fair, shards: 2}",
                              extra: "lease_ttl_s: 2\ntenants: {acme: {max_concurrent: 3}}")
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", path])
        let redis = try env.client()
        let keys = Keys(prefix: env.prefix)
        try env.until("the worker is up") { (try redis.run("ZCARD", keys.workers).int ?? 0) > 0 }
        let producer = try Producer(url: try RedisURL(env.redisURL), keys: keys)
        #expect(producer.shards == ["chat": 2])
        let ids = (0..<10).map { "k-\($0)" }
        for id in ids {
            try producer.push(raw: Array(TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=3,first_ms=1500", extra: #","tenant":"acme""#).utf8),
                              mode: "chat")
        }
        let families = QueueFamily.all("chat", shards: 2, keys: keys)
        func running() throws -> Int { try families.map { try redis.run("HGET", $0.running, "acme").string.flatMap { Int($0) } ?? 0 }.reduce(0, +) }
        try env.until("acme's jobs running") { try running() >= 2 }
        let victim = try #require(TestEnvironment.children(of: farm.pid).first)
        kill(victim, SIGKILL)
        let ended = try endTimes(events, ids, timeout: 60)
        #expect(ended.count == 10)
        for id in ids {
            let terminal = events.events(id).filter(\.isTerminal)
            #expect(terminal.count == 1 && terminal.first?.type == "done", "\(events.events(id))")
        }
        try env.until("the counters are back to zero") {
            try running() == 0 && families.allSatisfy { f in (try? redis.run("KEYS", f.runningBy(worker: "*")).array?.isEmpty) == true }
        }
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0)
    }
}
