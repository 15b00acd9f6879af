import Foundation
import Synchronization

/// A process started with `posix_spawn`, with default signal dispositions and
/// an unblocked signal mask whatever its parent had, and a thread that waits
/// for it to exit.
///
/// The child gets standard input, output and error and no other descriptor of
/// this process: libraries here (SwiftNIO, hiredis, libcurl) open sockets
/// without close-on-exec, and a child that kept the farm's listening socket
/// would hold its port for as long as the child (or anything it starts) lives.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let arguments: [String]
    private let exit = Mutex<(status: Int32?, waiters: [CheckedContinuation<Int32, Never>])>((nil, []))

    /// Starts `arguments[0]` (a path) with the rest as its arguments.
    /// With `ownProcessGroup`, the child does not receive the terminal's Ctrl-C meant for its parent,
    /// which then decides when to stop it.
    /// `output`, when given, becomes the child's standard output and error (the write end of a pipe the caller reads).
    public init(_ arguments: [String], environment: [String: String]? = nil, stdout: String? = nil, stderr: String? = nil,
                output: Int32? = nil, ownProcessGroup: Bool = false) throws(LLMQError) {
        self.arguments = arguments
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
        if ownProcessGroup {
            flags |= POSIX_SPAWN_SETPGROUP
            posix_spawnattr_setpgroup(&attr, 0)
        }
        posix_spawnattr_setflags(&attr, Int16(flags))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdout { posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644) }
        if let stderr { posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644) }
        if let output {
            posix_spawn_file_actions_adddup2(&actions, output, 1)
            posix_spawn_file_actions_adddup2(&actions, output, 2)
        }
        if let closeFrom = Self.addCloseFrom {
            _ = closeFrom(&actions, 3)
        } else {
            ProcessSetup.markDescriptorsCloseOnExec()
        }

        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0)=\($1)" }
        var cargv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var cenv: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer {
            cargv.forEach { free($0) }
            cenv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attr, &cargv, &cenv)
        guard rc == 0 else {
            throw LLMQError(.internal, "cannot start \(arguments[0]): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        let spawned = pid
        let t = Thread { [self] in
            var status: Int32 = 0
            while waitpid(spawned, &status, 0) < 0 && errno == EINTR {}
            let waiters = exit.withLock { e -> [CheckedContinuation<Int32, Never>] in
                e.status = status
                defer { e.waiters = [] }
                return e.waiters
            }
            waiters.forEach { $0.resume(returning: status) }
        }
        t.name = "llmq-wait-\(pid)"
        t.start()
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// glibc 2.34's `posix_spawn_file_actions_addclosefrom_np`, which Swift's
    /// Glibc module hides (it is declared for _GNU_SOURCE only); nil on an
    /// older libc, where every descriptor is marked close-on-exec instead.
    private static var addCloseFrom: AddCloseFrom? {
        dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddCloseFrom.self) }
    }

    public func signal(_ sig: Int32) {
        if exitStatus == nil { kill(pid, sig) }
    }

    /// Signals the child's whole process group (it must have been started with `ownProcessGroup`):
    /// engines such as vLLM run helper processes that must stop with them.
    public func signalGroup(_ sig: Int32) {
        if exitStatus == nil { kill(-pid, sig) }
    }

    /// The raw wait status once the process has exited.
    public var exitStatus: Int32? { exit.withLock { $0.status } }

    /// Waits for the process to exit; returns its raw wait status.
    @discardableResult
    public func wait() async -> Int32 {
        await withCheckedContinuation { c in
            let done = exit.withLock { e -> Int32? in
                if let s = e.status { return s }
                e.waiters.append(c)
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    /// A readable account of a wait status: "exit 0", "signal 9".
    public static func describe(_ status: Int32) -> String {
        let sig = status & 0x7F
        return sig == 0 ? "exit \((status >> 8) & 0xFF)" : "signal \(sig)"
    }

    public static func exitCode(_ status: Int32) -> Int32? {
        (status & 0x7F) == 0 ? (status >> 8) & 0xFF : nil
    }

    /// The path of the running executable.
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Finds an executable on PATH.
    public static func which(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let dirs: [String] = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for dir in dirs {
            let p = "\(dir)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }
}
