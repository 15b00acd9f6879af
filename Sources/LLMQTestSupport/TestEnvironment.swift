import Foundation
import LLMQ

/// A private world for one integration test: a redis-server and `llmq sim`
/// on free loopback ports, a unique key prefix, a scratch folder, and helpers
/// to start farms and workers as real processes.
public final class TestEnvironment: @unchecked Sendable {  // used from one test at a time
    public let redis: LocalRedis
    public let sim: ChildProcess
    public let simPort: Int
    public let prefix: String
    public let dir: String
    private var processes: [ChildProcess] = []

    public static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The `llmq` executable under test: `LLMQ_BIN`, else the debug build.
    public static func binary() throws -> String {
        let path = ProcessInfo.processInfo.environment["LLMQ_BIN"] ?? "\(packageRoot)/.build/debug/llmq"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("no llmq executable at \(path); run `swift build` (make test does) or set LLMQ_BIN")
        }
        return path
    }

    public init(_ name: String, persistence: Bool = false) throws {
        let tag = "\(name)-\(UUID().uuidString.prefix(6).lowercased())"
        dir = NSTemporaryDirectory() + "llmq-test-\(tag)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        prefix = "t\(UUID().uuidString.prefix(8).lowercased())"
        guard ChildProcess.which("redis-server") != nil else {
            throw TestFailure("redis-server is not installed; `apt-get install redis-server` (make deps) — integration tests need it")
        }
        redis = try LocalRedis(directory: dir + "/redis", persistence: persistence)
        simPort = try FreePort.find()
        sim = try ChildProcess([try Self.binary(), "sim", "--port", String(simPort)], stdout: dir + "/sim.log", stderr: dir + "/sim.log")
        try Self.waitForPort(simPort, process: sim, log: dir + "/sim.log")
    }

    deinit {
        for p in processes { p.signal(SIGKILL) }
        sim.signal(SIGKILL)
        redis.process.signal(SIGKILL)
    }

    public var redisURL: String { redis.urlString }
    public var simURL: String { "http://127.0.0.1:\(simPort)/v1" }

    public func client() throws -> PlainRedis { try PlainRedis(port: redis.port) }
    public func collector() throws -> EventCollector { try EventCollector(port: redis.port, prefix: prefix) }

    public func key(_ suffix: String) -> String { "\(prefix):\(suffix)" }

    /// Writes a configuration file and returns its path.
    public func writeConfig(workers: Int = 1, modes: [Mode: Int] = ["chat": 8, "complete": 4, "embed": 4],
                            routes: [String: [String]] = [:], drainTimeout: Double = 10, extra: String = "", providers: String = "",
                            name: String = "farm.yaml") throws -> String {
        var text = """
            redis: \(redisURL)
            prefix: \(prefix)
            workers: \(workers)
            drain_timeout_s: \(drainTimeout)
            restart_backoff_s: 0.1
            log_level: info
            http_port: 0
            modes:

            """
        for (m, c) in modes.sorted(by: { $0.key < $1.key }) { text += "  \(m): {concurrency: \(c)}\n" }
        text += "providers:\n  sim: {kind: sim, base_url: \"\(simURL)\", timeout_s: 30, idle_timeout_s: 5}\n"
        text += "  down: {kind: openai, base_url: \"http://127.0.0.1:1/v1\", timeout_s: 5, idle_timeout_s: 5, connect_timeout_s: 2}\n"
        text += providers
        if !routes.isEmpty {
            text += "routes:\n"
            for (r, t) in routes.sorted(by: { $0.key < $1.key }) {
                text += "  \(r): [\(t.map { "\"\($0)\"" }.joined(separator: ", "))]\n"
            }
        }
        text += extra
        let path = "\(dir)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Starts `llmq farm` (or any llmq subcommand) as a real process, logging to a file in `dir`.
    public func start(_ arguments: [String], log: String = "farm.log") throws -> ChildProcess {
        let p = try ChildProcess([try Self.binary()] + arguments, stdout: "\(dir)/\(log)", stderr: "\(dir)/\(log)")
        processes.append(p)
        return p
    }

    public func log(_ name: String = "farm.log") -> String {
        (try? String(contentsOfFile: "\(dir)/\(name)", encoding: .utf8)) ?? ""
    }

    /// Waits up to `timeout` for the process to exit and returns its wait status.
    public func waitExit(_ p: ChildProcess, timeout: Double = 30) async throws -> Int32 {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if let s = p.exitStatus { return s }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("process \(p.arguments.dropFirst().joined(separator: " ")) did not exit within \(timeout) s")
    }

    /// Polls `condition` until it holds or `timeout` passes.
    public func until(_ what: String, timeout: Double = 30, _ condition: () throws -> Bool) throws {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if try condition() { return }
            usleep(10_000)
        }
        throw TestFailure("timed out after \(timeout) s waiting for \(what)")
    }

    /// Child pids of a process (started by any of its threads), from /proc.
    public static func children(of pid: pid_t) -> [pid_t] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.flatMap { t in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { pid_t($0) }
        }
    }

    static func waitForPort(_ port: Int, process: ChildProcess, log: String, timeout: Double = 20) throws {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if let s = process.exitStatus {
                throw TestFailure("llmq sim exited (\(ChildProcess.describe(s))): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if ok { return }
            usleep(20_000)
        }
        throw TestFailure("llmq sim did not listen on port \(port) within \(timeout) s")
    }

    /// A chat job as JSON text.
    public static func chatJob(id: String, model: String, content: String = "Say hello", extra: String = "") -> String {
        #"{"id":"\#(id)","model":"\#(model)","messages":[{"role":"user","content":"\#(content)"}]\#(extra)}"#
    }
}
