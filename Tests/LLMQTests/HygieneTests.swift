import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// Process hygiene through real processes: what a crashed worker leaves behind,
/// the descriptors children inherit, signals and limits of workers, private
/// folders and the metrics file, and the delayed set as operators see it.
@Suite(.serialized) struct HygieneTests {
    // MARK: crashes

    @Test func aWorkerKilledWithSIGABRTLeavesNothingBehindAndTheFarmStartsAgainOnItsPort() async throws {
        let env = try TestEnvironment("hyg-crash")
        let port = try FreePort.find()
        let config = try OperationsTests.config(env, workers: 2, httpPort: port, modes: ["chat": 2], routes: ["fast": ["sim/sim:tokens=3"]])
        let farm = try env.start(["farm", "--config", config])
        _ = try OperationsTests.waitHTTP(port, "/readyz", status: 200)
        let first = try Self.workers(of: farm, count: 2, env: env)
        let listener = try #require(ProcessTable.listeningSocket(port: port), "nothing listens on \(port)")

        // A worker started after the farm's listening socket exists is the one that used to inherit it.
        kill(first[0], SIGKILL)
        let second = try Self.workers(of: farm, count: 2, env: env, excluding: [first[0]])
        let restarted = try #require(second.first { !first.contains($0) })
        // Until it has exec'd, a child spawned a moment ago still shows its parent's descriptors.
        try Self.waitRegistered(restarted, env: env)
        #expect(!ProcessTable.descriptors(of: restarted).contains(listener),
                "the restarted worker inherited the /metrics listening socket: \(ProcessTable.descriptors(of: restarted))")

        kill(restarted, SIGABRT)
        let third = try Self.workers(of: farm, count: 2, env: env, excluding: [first[0], restarted])
        for pid in third { try Self.waitRegistered(pid, env: env) }
        try OperationsTests.scrapeUntil(port, "two restarts counted") { $0.sum("llmq_worker_restarts_total") == 2 }
        #expect(env.log().contains("(pid \(restarted)) died (signal 6)"), "\(env.log().suffix(1500))")

        // Everything a worker starts inherits its stderr (the farm's log): only the farm and its live workers hold it.
        let log = "\(env.dir)/farm.log"
        let alive = Set([farm.pid] + TestEnvironment.children(of: farm.pid))
        let holders = ProcessTable.holders(of: log)
        #expect(holders.subtracting(alive).isEmpty, "left behind: \(ProcessTable.describe(holders.subtracting(alive)))")
        let onPort = ProcessTable.holders(of: listener)
        #expect(onPort == [farm.pid], "the listening socket is held by \(ProcessTable.describe(onPort))")

        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log().suffix(2000))")
        #expect(ProcessTable.holders(of: log).isEmpty, "still running after the farm stopped: \(ProcessTable.describe(ProcessTable.holders(of: log)))")

        // At once, on the same port.
        let again = try env.start(["farm", "--config", config], log: "farm2.log")
        _ = try OperationsTests.waitHTTP(port, "/readyz", status: 200, timeout: 20)
        try OperationsTests.scrapeUntil(port, "the second farm's workers") { $0.sum("llmq_workers_live") == 2 }
        again.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(again)) == 0, "\(env.log("farm2.log").suffix(2000))")
    }

    @Test func workersOfAFarmKilledWithSIGKILLDrainTheirJobsAndExit() async throws {
        let env = try TestEnvironment("hyg-orphan")
        let config = try env.writeConfig(workers: 2, modes: ["chat": 2], routes: ["slow": ["sim/sim:tokens=40,delay_ms=50"]])
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        let workers = try Self.workers(of: farm, count: 2, env: env)
        for pid in workers { try Self.waitRegistered(pid, env: env) }
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "o-1", model: "slow"))
        try events.wait(what: "o-1 streaming") { ($0["o-1"]?.count ?? 0) >= 3 }

        // A farm killed this way cannot remove its metrics folder; the test does.
        let folder = try Self.metricsFolder(of: workers[0])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        kill(farm.pid, SIGKILL)
        try env.until("both orphaned workers to exit", timeout: 30) { workers.allSatisfy { !ProcessTable.isRunning($0) } }
        let ended = try events.waitForTerminal(["o-1"])
        #expect(ended["o-1"]?.last?.type == "done", "the job finished in the drain: \(ended["o-1"] ?? [])")
        #expect(env.log().components(separatedBy: "the supervisor (pid \(farm.pid)) is gone").count == 3, "\(env.log().suffix(2000))")
    }

    @Test func aWorkerWhoseRedisIsGoneStillStopsWhenAsked() async throws {
        let env = try TestEnvironment("hyg-noredis")
        let config = try env.writeConfig(workers: 1, modes: ["chat": 2], routes: ["slow": ["sim/sim:tokens=400,delay_ms=50"]], drainTimeout: 2)
        let events = try env.collector()
        let worker = try env.start(["worker", "--config", config, "--id", "gone-1"], log: "worker.log")
        let redis = try env.client()
        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "g-1", model: "slow"))
        try events.wait(what: "g-1 streaming") { ($0["g-1"]?.count ?? 0) >= 3 }

        // Streaming into a Redis that is gone: the drain's 2 s pass, the job is cut, and its last writes
        // can go nowhere. The worker gives them up (the job would stay in flight for the reaper) and exits.
        env.redis.process.signal(SIGKILL)
        worker.signal(SIGTERM)
        let status = try await env.waitExit(worker, timeout: 60)
        let log = env.log("worker.log")
        #expect(ChildProcess.exitCode(status) == 0, "\(log.suffix(2000))")
        #expect(log.contains("gave up on Redis"), "\(log.suffix(2000))")
        #expect(log.contains("worker stopped"), "\(log.suffix(2000))")
    }

    /// The folder of a farm's worker's `--metrics-file`.
    static func metricsFolder(of worker: pid_t) throws -> String {
        let args = ProcessTable.arguments(of: worker).split(separator: " ")
        let file = try #require(args.drop { $0 != "--metrics-file" }.dropFirst().first, "no --metrics-file in \(args)")
        return (String(file) as NSString).deletingLastPathComponent
    }

    /// Waits until the farm has `count` workers, none of them in `excluding`.
    static func workers(of farm: ChildProcess, count: Int, env: TestEnvironment, excluding: Set<pid_t> = []) throws -> [pid_t] {
        var pids: [pid_t] = []
        try env.until("\(count) workers other than \(excluding.sorted())", timeout: 30) {
            pids = TestEnvironment.children(of: farm.pid)
            return pids.count == count && excluding.isDisjoint(with: pids)
        }
        return pids
    }

    /// Waits until a worker process has registered itself in Redis (its hash names its pid).
    static func waitRegistered(_ pid: pid_t, env: TestEnvironment) throws {
        let redis = try env.client()
        try env.until("worker pid \(pid) registered", timeout: 30) {
            let ids = try redis.run("ZRANGE", env.key("workers"), "0", "-1").array?.compactMap(\.string) ?? []
            return try ids.contains { try redis.run("HGET", env.key("worker:\($0)"), "pid").string == String(pid) }
        }
    }

    // MARK: memory

    /// The HTTP engine's inbox after a burst above malloc's mmap threshold: round after round the engine
    /// and the inbox trade the same two buffers. (A copy taken and the original emptied made a new
    /// buffer each round, a page larger than the last.)
    @Test func theEngineInboxKeepsTwoBuffersAfterABurst() {
        var inbox = Handoff<Int>()
        for i in 0..<20_000 { _ = inbox.append(i) }
        var drained: [Int] = []
        inbox.take(into: &drained)
        #expect(drained.count == 20_000)
        let most = max(inbox.capacity, drained.capacity)
        drained.removeAll(keepingCapacity: true)
        for round in 0..<2_000 {
            let first = inbox.append(round), second = inbox.append(-1)
            #expect(first && !second, "only an append to an empty inbox wakes the engine")
            inbox.take(into: &drained)
            #expect(drained == [round, -1])
            drained.removeAll(keepingCapacity: true)
        }
        #expect(max(inbox.capacity, drained.capacity) <= most, "a buffer grew: \(inbox.capacity), \(drained.capacity) > \(most)")
    }

    @Test func childrenInheritNoDescriptorButTheStandardOnes() async throws {
        let dir = try PrivateDirectory(name: "llmq-test-fds")
        defer { dir.remove() }
        // Opened without O_CLOEXEC, as SwiftNIO, hiredis and libcurl open their sockets.
        let marker = "\(dir.path)/inherited-marker"
        let fd = open(marker, O_WRONLY | O_CREAT, 0o600)
        #expect(fd > 2)
        defer { close(fd) }
        let out = "\(dir.path)/fds.txt"
        let child = try ChildProcess(["/bin/sh", "-c", "ls -l /proc/$$/fd/"], stdout: out, stderr: out)
        #expect(ChildProcess.exitCode(await child.wait()) == 0)
        let listing = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(listing.contains("fds.txt"), "the listing: \(listing)")
        #expect(!listing.contains("inherited-marker"), "the child inherited a descriptor: \(listing)")
    }

    // MARK: signals, limits, folders

    @Test func farmAndWorkersIgnoreSIGPIPERaiseTheirFileLimitAndKeepMetricsInAPrivateFolder() async throws {
        let env = try TestEnvironment("hyg-setup")
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        guard limit.rlim_max > 256 else { throw TestFailure("the hard open-file limit here is \(limit.rlim_max); this test needs more than 256") }
        let port = try FreePort.find()
        let config = try OperationsTests.config(env, workers: 2, httpPort: port, modes: ["chat": 2], routes: [:])
        // The old, predictable folder name is taken by a symlink to a folder someone else could read.
        let bait = "\(env.dir)/bait"
        try FileManager.default.createDirectory(atPath: bait, withIntermediateDirectories: true)
        let tmp = NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/"
        // `exec` keeps the shell's pid, so $$ is the farm's pid.
        let script = "ln -s '\(bait)' '\(tmp)llmq-farm-'$$ && ulimit -Sn 256 && exec '\(try TestEnvironment.binary())' farm --config '\(config)'"
        let farm = try ChildProcess(["/bin/sh", "-c", script], stdout: "\(env.dir)/farm.log", stderr: "\(env.dir)/farm.log")
        let planted = "\(tmp)llmq-farm-\(farm.pid)"
        defer {
            farm.signal(SIGKILL)
            unlink(planted)
        }
        _ = try OperationsTests.waitHTTP(port, "/readyz", status: 200)
        let workers = try Self.workers(of: farm, count: 2, env: env)
        try OperationsTests.scrapeUntil(port, "both workers' metrics files") { s in
            Set(s.series("llmq_permits_free").compactMap { $0.labels["worker"] }).count == 2
        }

        for pid in [farm.pid] + workers {
            let status = ProcessTable.status(of: pid)
            let ignored = UInt64(status["SigIgn"] ?? "", radix: 16) ?? 0
            #expect(ignored & (1 << (UInt64(SIGPIPE) - 1)) != 0, "pid \(pid) does not ignore SIGPIPE: SigIgn \(status["SigIgn"] ?? "?")")
            let soft = ProcessTable.openFileLimit(of: pid)
            #expect(soft == UInt64(limit.rlim_max) || (limit.rlim_max == rlim_t.max && (soft ?? 0) > 256),
                    "pid \(pid) runs with a soft open-file limit of \(soft.map(String.init) ?? "?"), hard \(limit.rlim_max)")
        }
        #expect(env.log().contains("open file limit raised from 256 to"), "\(env.log().prefix(2000))")

        #expect(try FileManager.default.contentsOfDirectory(atPath: bait).isEmpty, "the farm wrote through the planted symlink")
        let folder = try Self.metricsFolder(of: workers[0])
        #expect(folder.hasPrefix("\(tmp)llmq-farm-\(farm.pid)-"), "metrics folder \(folder)")
        var st = stat()
        #expect(lstat(folder, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR, "\(folder) is not a real folder")
        #expect(st.st_mode & 0o777 == 0o700 && st.st_uid == geteuid(), "mode \(String(st.st_mode & 0o777, radix: 8)), uid \(st.st_uid)")

        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log().suffix(2000))")
        #expect(!FileManager.default.fileExists(atPath: folder), "the farm left \(folder) behind")
        #expect(lstat(planted, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK, "the planted symlink was touched")
    }

    @Test func privateFoldersAreNewAndRefuseSymlinksAndOthersFolders() throws {
        let base = try PrivateDirectory(name: "llmq-test-private")
        defer { base.remove() }
        let a = try PrivateDirectory(name: "llmq-farm-1", base: base.path)
        let b = try PrivateDirectory(name: "llmq-farm-1", base: base.path)
        #expect(a.path != b.path)
        var st = stat()
        #expect(lstat(a.path, &st) == 0 && st.st_mode & 0o777 == 0o700)

        let target = "\(base.path)/elsewhere"
        #expect(mkdir(target, 0o700) == 0)
        let link = "\(base.path)/link"
        #expect(symlink(target, link) == 0)
        #expect(throws: LLMQError.self) { try PrivateDirectory(claiming: link) }
        let open = "\(base.path)/open"
        #expect(mkdir(open, 0o700) == 0 && chmod(open, 0o777) == 0)
        #expect(throws: LLMQError.self) { try PrivateDirectory(claiming: open) }
        let fresh = try PrivateDirectory(claiming: "\(base.path)/fresh")
        #expect(lstat(fresh.path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR && st.st_mode & 0o777 == 0o700)
        _ = try PrivateDirectory(claiming: fresh.path)
    }

    @Test func theMetricsFileIsWrittenAroundSymlinksNeverThroughThem() throws {
        let dir = try PrivateDirectory(name: "llmq-test-metrics")
        defer { dir.remove() }
        let victim = "\(dir.path)/victim"
        try "keep".write(toFile: victim, atomically: false, encoding: .utf8)
        let path = "\(dir.path)/worker-0.prom"
        #expect(symlink(victim, "\(path).tmp") == 0)
        try MetricsFiles.writeAtomically(Array("llmq_ready 1\n".utf8), to: path)
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep", "written through the .tmp symlink")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "llmq_ready 1\n")

        // A symlink in place of the file itself is replaced, not followed.
        unlink(path)
        #expect(symlink(victim, path) == 0)
        try MetricsFiles.writeAtomically(Array("llmq_ready 0\n".utf8), to: path)
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep")
        var st = stat()
        #expect(lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG)
        // And the reader leaves symlinks out.
        #expect(symlink(victim, "\(dir.path)/worker-9.prom") == 0)
        #expect(MetricsFiles.read(directory: dir.path).map(\.worker) == ["worker-0"])
    }

    // MARK: the delayed set

    @Test func delayedJobsShowInStatsAndInTheGaugeButNotInTheDepth() async throws {
        let env = try TestEnvironment("hyg-delayed")
        let redis = try env.client()
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
        let later = nowMs + 3_600_000
        for i in 0..<3 { try redis.run("ZADD", env.key("{chat}:delayed"), String(later + Int64(i) * 1000), "later-\(i)") }
        for i in 0..<2 { try redis.run("ZADD", env.key("{chat}:delayed"), String(nowMs - 60_000 - Int64(i)), "due-\(i)") }
        try redis.run("ZADD", env.key("{batch}:delayed"), String(later), "batch-0")
        let client = ["--redis", env.redisURL, "--prefix", env.prefix]

        let json = try env.start(["stats", "--json"] + client, log: "stats.json")
        #expect(ChildProcess.exitCode(try await env.waitExit(json)) == 0, "\(env.log("stats.json"))")
        let stats = try JSONValue.parse(Array(env.log("stats.json").utf8))
        let chat = stats["modes"]?.arrayValue?.first { $0["mode"] == "chat" }
        #expect(chat?["delayed"] == 5 && chat?["delayed_due"] == 2 && chat?["pending"] == 0, "\(env.log("stats.json"))")
        #expect((chat?["next_due_in_s"]?.doubleValue ?? 1) <= -60, "\(env.log("stats.json"))")
        let batch = stats["modes"]?.arrayValue?.first { $0["mode"] == "batch" }
        #expect(batch?["delayed"] == 1 && batch?["delayed_due"] == 0, "a mode with only a delayed set is found: \(env.log("stats.json"))")
        #expect(stats["delayed_total"] == 6)

        let text = try env.start(["stats"] + client, log: "stats.txt")
        #expect(ChildProcess.exitCode(try await env.waitExit(text)) == 0)
        let lines = env.log("stats.txt").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(lines.contains(["MODE", "PENDING", "IN-FLIGHT", "DELAYED", "DUE", "NEXT", "DUE", "DEAD"]), "\(env.log("stats.txt"))")
        #expect(lines.contains(["chat", "0", "0", "5", "2", "now", "0"]), "\(env.log("stats.txt"))")
        #expect(lines.contains(["batch", "0", "0", "1", "0", "in", "59m", "0"]) || lines.contains(["batch", "0", "0", "1", "0", "in", "60m", "0"]),
                "\(env.log("stats.txt"))")

        // The gauge, from a farm's sampler. Due jobs are removed first: workers move those back to the queue.
        try redis.run("ZREM", env.key("{chat}:delayed"), "due-0", "due-1")
        let port = try FreePort.find()
        let config = try OperationsTests.config(env, workers: 1, httpPort: port, modes: ["chat": 2], routes: [:])
        let farm = try env.start(["farm", "--config", config])
        let s = try OperationsTests.scrapeUntil(port, "3 delayed chat jobs") { s in
            s.sum("llmq_queue_delayed_jobs", ["mode": "chat"]) == 3 && s.sum("llmq_workers_live") == 1
        }
        #expect(s.sum("llmq_queue_delayed_overdue_jobs", ["mode": "chat"]) == 0)
        #expect(s.sum("llmq_queue_depth_jobs", ["mode": "chat"]) == 0, "delayed jobs are not in the depth autoscaling covers")
        #expect(s.types["llmq_queue_delayed_jobs"] == "gauge" && s.types["llmq_queue_delayed_overdue_jobs"] == "gauge")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log().suffix(2000))")
    }
}

/// What /proc says about the processes of this machine.
enum ProcessTable {
    static func pids() -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    }

    /// Where each descriptor of a process points (`/path`, `socket:[INODE]`, ...).
    static func descriptors(of pid: pid_t) -> Set<String> {
        let dir = "/proc/\(pid)/fd"
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return Set(fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\($0)") })
    }

    /// Processes with a descriptor pointing at `target`.
    static func holders(of target: String) -> Set<pid_t> {
        Set(pids().filter { descriptors(of: $0).contains(target) })
    }

    /// `socket:[INODE]` of the loopback TCP socket listening on `port`.
    static func listeningSocket(port: Int) -> String? {
        let text = (try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)) ?? ""
        let local = String(format: ":%04X", port)
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            // sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode
            if f.count > 9, f[1].hasSuffix(local), f[3] == "0A" { return "socket:[\(f[9])]" }
        }
        return nil
    }

    /// Whether a process exists and has not exited (a zombie has).
    static func isRunning(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: end)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }

    static func status(of pid: pid_t) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { out[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return out
    }

    /// The soft RLIMIT_NOFILE of a process.
    static func openFileLimit(of pid: pid_t) -> UInt64? {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") }) else { return nil }
        return line.split(separator: " ").dropFirst(3).first.flatMap { UInt64($0) }
    }

    static func arguments(of pid: pid_t) -> String {
        let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
        return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
    }

    static func describe(_ pids: Set<pid_t>) -> String {
        pids.sorted().map { "\($0) \(arguments(of: $0))" }.joined(separator: "; ")
    }
}
