import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// Hostile jobs pushed onto a live farm (real redis-server, `llmq farm` with two
/// workers, the sim provider), mixed with good ones. No job may take a worker
/// down or grow it: every job with a readable id gets exactly one terminal
/// event (good ones `done`), every rejected job is in the dead list, no worker
/// restarts, and worker RSS stays within 20% of what it was after a warm-up.
///
/// `make test` runs about 400 jobs; `make fuzz` (LLMQ_FUZZ_SIZE=10000) the full size.
@Suite(.serialized) struct HostileJobFuzzTests {
    static let size = Int(ProcessInfo.processInfo.environment["LLMQ_FUZZ_SIZE"] ?? "") ?? 400
    static let maxJobBytes = 65536
    static let modes = ["chat", "complete", "embed"]

    /// What the farm should do with one job, as the worker's own parser sees it.
    struct Expectation {
        var job: FuzzJob
        /// The id a terminal event must go to, when one can be read.
        var id: String?
        /// Whether the parser refuses it (then it must be in the dead list).
        var rejected: Bool
    }

    static func expect(_ job: FuzzJob) -> Expectation {
        do {
            let j = try JobParser(maxBytes: maxJobBytes).parse(job.raw, mode: Mode(job.mode))
            return Expectation(job: job, id: j.id, rejected: false)
        } catch {
            return Expectation(job: job, id: error.id, rejected: true)
        }
    }

    /// The SHA-256 of the job a dead entry holds: its own field, or computed from an entry of an older
    /// builder that kept the whole job.
    static func deadJobHash(_ entry: [String: JSONValue]) -> String? {
        if let h = entry["job_sha256"]?.stringValue { return h }
        if let text = entry["job"]?.stringValue { return SHA256.hex(Array(text.utf8)) }
        if let b = entry["job_base64"]?.stringValue, let d = Data(base64Encoded: b) { return SHA256.hex(Array(d)) }
        return nil
    }

    static func rss(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    /// Pushes jobs in pipelined batches.
    static func push(_ jobs: [FuzzJob], redis: PlainRedis, env: TestEnvironment) throws {
        for chunk in stride(from: 0, to: jobs.count, by: 50) {
            for j in jobs[chunk..<min(chunk + 50, jobs.count)] {
                let r = try redis.run(bytes: [Array("LPUSH".utf8), Array(env.key("{\(j.mode)}:queue").utf8), j.raw])
                guard r.int != nil else { throw TestFailure("LPUSH failed: \(r)") }
            }
        }
    }

    static func deadCount(_ redis: PlainRedis, _ env: TestEnvironment) throws -> Int {
        try modes.reduce(0) { n, m in n + (try redis.run("LLEN", env.key("{\(m)}:dead")).int ?? 0) }
    }

    /// Waits until every queue and in-flight list is empty and the dead lists hold `dead` entries.
    static func waitSettled(_ redis: PlainRedis, _ env: TestEnvironment, dead: Int, timeout: Double) throws {
        try env.until("empty queues and in-flight lists, and \(dead) dead entries", timeout: timeout) {
            var pending = 0, buried = 0
            for m in modes {
                pending += try redis.run("LLEN", env.key("{\(m)}:queue")).int ?? 0
                for k in try redis.run("KEYS", env.key("{\(m)}:inflight:*")).array ?? [] {
                    pending += try redis.run("LLEN", k.string ?? "").int ?? 0
                }
                buried += try redis.run("LLEN", env.key("{\(m)}:dead")).int ?? 0
            }
            return pending == 0 && buried >= dead
        }
    }

    @Test func hostileJobsNeitherCrashNorGrowWorkers() async throws {
        let env = try TestEnvironment("fuzz")
        let port = try FreePort.find()
        let otlpPort = try FreePort.find()  // nothing listens: spans are made (enqueued_at, traceparent) and dropped
        let config = try env.writeConfig(
            workers: 2, modes: ["chat": 16, "complete": 8, "embed": 8],
            routes: ["fast": ["sim/sim:tokens=3"], "vec": ["sim/sim:dim=3"]],
            extra: """
                http_port: \(port)
                http_host: 127.0.0.1
                max_job_bytes: \(Self.maxJobBytes)
                retry_base_s: 0.01
                retry_max_s: 0.05
                tracing: {otlp_endpoint: "http://127.0.0.1:\(otlpPort)", timeout_s: 1}

                """)
        // writeConfig sets http_port 0 first; the later key must win, so drop the first.
        var text = try String(contentsOfFile: config, encoding: .utf8)
        text = text.replacingOccurrences(of: "http_port: 0\n", with: "")
        try text.write(toFile: config, atomically: true, encoding: .utf8)

        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        _ = try OperationsTests.waitHTTP(port, "/readyz", status: 200)
        try OperationsTests.scrapeUntil(port, "two live workers") { $0.sum("llmq_workers_live") == 2 }
        let workers = Set(TestEnvironment.children(of: farm.pid))
        #expect(workers.count == 2)

        // Warm-up: a batch of the same kind, so "before" is measured on warm allocators and caches.
        var warm = HostileJobGenerator(seed: 0xFEED, maxJobBytes: Self.maxJobBytes)
        let warmJobs = (0..<max(100, Self.size / 10)).map { warm.job(1_000_000 + $0) }
        let warmExpect = warmJobs.map(Self.expect)
        try Self.push(warmJobs, redis: redis, env: env)
        try events.waitForTerminal(warmExpect.compactMap(\.id), timeout: 120)
        try Self.waitSettled(redis, env, dead: warmExpect.filter(\.rejected).count, timeout: 60)
        let deadBefore = try Self.deadCount(redis, env)
        let rssBefore = workers.compactMap { pid in Self.rss(pid).map { (pid, $0) } }

        let started = Date()
        var generator = HostileJobGenerator(seed: 0x11_4D_51, maxJobBytes: Self.maxJobBytes)
        let jobs = (0..<Self.size).map { generator.job($0) }
        let expected = jobs.map(Self.expect)
        try Self.push(jobs, redis: redis, env: env)
        let ids = expected.compactMap(\.id)
        let timeout = 60 + Double(Self.size) / 20
        try events.waitForTerminal(ids, timeout: timeout)
        let rejected = expected.filter(\.rejected)
        try Self.waitSettled(redis, env, dead: warmExpect.filter(\.rejected).count + rejected.count, timeout: timeout)
        let seconds = Date().timeIntervalSince(started)
        let deadLettered = try Self.deadCount(redis, env) - deadBefore

        // Exactly one terminal event per job with a readable id; good ones `done`. A mutation can turn one
        // job's id into another's (a flipped digit), so an id gets as many terminal events as jobs carry it.
        var jobsPerID: [String: Int] = [:]
        for id in ids + warmExpect.compactMap(\.id) { jobsPerID[id, default: 0] += 1 }
        var doubled: [String] = [], notDone: [String] = []
        for (id, n) in jobsPerID {
            let terminal = events.events(id).filter(\.isTerminal)
            if terminal.count != n { doubled.append("\(id) (\(n) jobs): \(terminal.map(\.raw))") }
        }
        for e in expected where e.job.isGood {
            guard let id = e.id, !events.events(id).contains(where: { $0.type == "done" }) else { continue }
            notDone.append("\(id): \(events.events(id).map(\.raw))")
        }
        #expect(doubled.isEmpty, "ids without exactly one terminal event per job:\n\(doubled.prefix(10).joined(separator: "\n"))")
        #expect(notDone.isEmpty, "good jobs that did not end done:\n\(notDone.prefix(10).joined(separator: "\n"))")

        // Every rejected job is in the dead list (as a multiset: truncations of different jobs can be equal).
        var inDead: [String: Int] = [:]
        for m in Self.modes {
            for entry in try redis.run("LRANGE", env.key("{\(m)}:dead"), "0", "-1").array ?? [] {
                guard let o = (try? JSONValue.parse(Array((entry.string ?? "").utf8)))?.objectValue, let h = Self.deadJobHash(o) else {
                    Issue.record("a dead entry is not a readable object: \(entry.string?.prefix(200) ?? "")")
                    continue
                }
                inDead[h, default: 0] += 1
            }
        }
        var missing: [String] = []
        for e in rejected + warmExpect.filter(\.rejected) {
            let h = SHA256.hex(e.job.raw)
            if let n = inDead[h], n > 0 { inDead[h] = n - 1 } else { missing.append("\(e.job.family): \(String(decoding: e.job.raw.prefix(120), as: UTF8.self))") }
        }
        #expect(missing.isEmpty, "\(missing.count) rejected jobs are not in the dead list, e.g.\n\(missing.prefix(10).joined(separator: "\n"))")

        // No worker died or was restarted.
        let scrape = try OperationsTests.scrape(port)
        let restarts = scrape.sum("llmq_worker_restarts_total") ?? 0
        #expect(restarts == 0, "the supervisor restarted workers: \(restarts)\n\(env.log().suffix(3000))")
        #expect(Set(TestEnvironment.children(of: farm.pid)) == workers, "worker pids changed")

        // Worker memory: within 20% of the warm figure.
        for (pid, before) in rssBefore {
            let after = try #require(Self.rss(pid), "worker \(pid) is gone")
            #expect(Double(after) <= Double(before) * 1.2, "worker \(pid) grew from \(before) kB to \(after) kB")
            print("fuzz: worker \(pid) RSS \(before) kB -> \(after) kB")
        }

        var families: [String: (Int, Int)] = [:]
        for e in expected { families[e.job.family, default: (0, 0)].0 += 1; if e.rejected { families[e.job.family, default: (0, 0)].1 += 1 } }
        let answered = expected.filter { $0.id != nil }.count
        print("""
            fuzz: | inputs tried | worker deaths | answered (readable id, one terminal event) | refused by the parser | dead-lettered | seconds |
            fuzz: | \(jobs.count) | \(Int(restarts)) | \(answered) | \(rejected.count) | \(deadLettered) | \(String(format: "%.1f", seconds)) |
            fuzz: by family (tried/rejected): \(families.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.0)/\($0.value.1)" }.joined(separator: ", "))
            """)
        events.stop()
    }
}
