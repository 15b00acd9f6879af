import Foundation
import Synchronization

/// A private redis-server on a free loopback port, for `llmq dev` and tests.
public final class LocalRedis: Sendable {
    public let port: Int
    public let directory: String
    private let current: Mutex<ChildProcess>
    private let arguments: [String]
    public var process: ChildProcess { current.withLock { $0 } }

    public var url: RedisURL { RedisURL(host: "127.0.0.1", port: port) }
    public var urlString: String { "redis://127.0.0.1:\(port)" }

    /// Starts redis-server and returns once it answers PING.
    public init(directory: String, port: Int? = nil, persistence: Bool = false, extraArguments: [String] = []) throws(LLMQError) {
        guard let exe = ChildProcess.which("redis-server") else {
            throw .configuration("redis-server is not installed; run `apt-get install redis-server` (make deps does it)")
        }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let p: Int
        if let port { p = port } else { p = try FreePort.find() }
        self.port = p
        self.directory = directory
        var args = [exe, "--port", String(p), "--bind", "127.0.0.1", "--dir", directory, "--daemonize", "no",
                    "--logfile", "\(directory)/redis.log", "--save", "", "--appendonly", persistence ? "yes" : "no"]
        if persistence { args += ["--appendfsync", "everysec"] }
        args += extraArguments
        arguments = args
        let process = try ChildProcess(args, ownProcessGroup: true)
        current = Mutex(process)
        try Self.waitUntilReady(url: RedisURL(host: "127.0.0.1", port: p), process: process, log: "\(directory)/redis.log")
    }

    /// Stops the server (SIGTERM, so it writes its append-only file) and starts it again on the same port and folder.
    public func restart() async throws(LLMQError) {
        await stop()
        let process = try ChildProcess(arguments, ownProcessGroup: true)
        current.withLock { $0 = process }
        try Self.waitUntilReady(url: url, process: process, log: "\(directory)/redis.log")
    }

    static func waitUntilReady(url: RedisURL, process: ChildProcess, log: String, timeout: Double = 10) throws(LLMQError) {
        let end = Date().addingTimeInterval(timeout)
        var lastError = ""
        while Date() < end {
            if let status = process.exitStatus {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw .configuration("redis-server exited (\(ChildProcess.describe(status))): \(text.suffix(500))")
            }
            do {
                let c = try RedisConnection(url, connectTimeout: 0.5)
                if case .status("PONG") = try c.command(["PING"]) { return }
            } catch {
                lastError = error.message
            }
            usleep(20_000)
        }
        throw .configuration("redis-server on port \(url.port) did not answer within \(timeout) s: \(lastError)")
    }

    /// Stops the server (SIGTERM) and waits for it.
    public func stop() async {
        process.signal(SIGTERM)
        await process.wait()
    }
}

/// Finds a free TCP port on loopback.
public enum FreePort {
    public static func find() throws(LLMQError) -> Int {
        // Linux's SOCK_STREAM | SOCK_CLOEXEC: the release build (whole-module) finds neither name through Foundation or Glibc.
        let fd = socket(AF_INET, 1 | 0o2000000, 0)
        guard fd >= 0 else { throw LLMQError(.internal, "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                bind(fd, sp, len) == 0 && getsockname(fd, sp, &len) == 0
            }
        }
        guard ok else { throw LLMQError(.internal, "cannot bind a free port on 127.0.0.1") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
