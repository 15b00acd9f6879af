import CCurlShim
import Foundation
import Logging

/// What a long-running llmq process (`llmq farm`, `llmq worker`, `llmq dev`)
/// sets up about itself before it starts any service.
public enum ProcessSetup {
    /// Ignores SIGPIPE (a write to a socket the peer closed then fails with
    /// EPIPE, which the Redis and HTTP layers report, instead of killing the
    /// process and every job it holds), raises the open-file limit and lets
    /// malloc grow its heaps in large steps.
    /// Children started with `ChildProcess` get SIGPIPE's default back.
    public static func prepare(logger: Logger) {
        signal(SIGPIPE, SIG_IGN)
        // A burst of new streams grows the HTTP thread's malloc arena page by page, one mprotect each
        // (glibc's default pad is 128 KiB); growing it 16 MiB at a time took a fifth off the time one
        // worker needs to start 3,000 streams. Untouched pages cost no memory.
        _ = llmq_malloc_top_pad(16 << 20)
        let limit = raiseOpenFileLimit()
        if limit.before < limit.after {
            logger.info("open file limit raised from \(limit.before) to \(limit.after) (the hard limit)")
        } else if let error = limit.error {
            logger.warning("open file limit stays at \(limit.before): \(error); raise the hard limit (LimitNOFILE=, ulimit -Hn) for many streams")
        } else {
            logger.info("open file limit is \(limit.after) (already the hard limit)")
        }
    }

    public struct OpenFileLimit: Sendable, Equatable {
        public var before: UInt64
        public var after: UInt64
        /// Why the soft limit could not be raised, if it could not.
        public var error: String?
    }

    /// Sets the soft RLIMIT_NOFILE to the hard one (capped at the kernel's
    /// `fs.nr_open`, since an unlimited hard limit cannot be the soft one):
    /// each stream is a socket, and distributions start processes with a soft
    /// limit of 1024. Nothing here uses `select`, so descriptors above 1024 are safe.
    @discardableResult
    public static func raiseOpenFileLimit() -> OpenFileLimit {
        var r = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0 else {
            return OpenFileLimit(before: 0, after: 0, error: "getrlimit: \(String(cString: strerror(errno)))")
        }
        let before = UInt64(r.rlim_cur)
        var target = UInt64(r.rlim_max)
        if r.rlim_max == rlim_t.max {  // RLIM_INFINITY
            let text = (try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8)) ?? ""
            target = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 1_048_576
        }
        guard before < target else { return OpenFileLimit(before: before, after: before) }
        r.rlim_cur = rlim_t(target)
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0 else {
            return OpenFileLimit(before: before, after: before, error: "setrlimit: \(String(cString: strerror(errno)))")
        }
        return OpenFileLimit(before: before, after: target)
    }

    /// Marks every descriptor this process has open, from 3 up, close-on-exec.
    ///
    /// SwiftNIO and hiredis open sockets without it. `ChildProcess` closes them
    /// in its children anyway; this covers processes started by code that is
    /// not ours, such as the Swift runtime's crash backtracer, which would
    /// otherwise keep a crashed process's listening socket (and so its port)
    /// for as long as it runs. Call it once a listening socket exists.
    public static func markDescriptorsCloseOnExec() {
        guard let dir = opendir("/proc/self/fd") else { return }
        defer { closedir(dir) }
        let own = dirfd(dir)
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let fd = Int32(name), fd > 2, fd != own else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 && flags & FD_CLOEXEC == 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }
}
