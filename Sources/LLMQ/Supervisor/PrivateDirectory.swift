import Foundation

/// A working folder that only this user can enter: the workers' metrics files
/// of `llmq farm`, the redis-server data and configuration of `llmq dev`.
///
/// A predictable name in a shared /tmp (`/tmp/llmq-farm-PID`) lets another
/// user create it first, or put a symlink there, and read or redirect what the
/// farm writes. `mkdtemp` picks a new name and creates the folder with mode
/// 0700 in one step; it never reuses an existing folder or follows a symlink.
public struct PrivateDirectory: Sendable {
    public let path: String

    /// Creates `BASE/NAME-XXXXXX` (BASE: `$TMPDIR` or /tmp), mode 0700.
    public init(name: String, base: String = NSTemporaryDirectory()) throws(LLMQError) {
        let dir = base.hasSuffix("/") ? base : base + "/"
        var template = Array("\(dir)\(name)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        guard made else {
            throw .configuration("cannot create a private folder in \(dir): \(String(cString: strerror(errno))); set TMPDIR to a writable folder")
        }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Uses a folder the user named (`llmq dev --dir`): creates it with mode
    /// 0700 when missing; an existing one must be a real folder (not a symlink)
    /// owned by this user and writable by no one else.
    public init(claiming path: String) throws(LLMQError) {
        self.path = path
        if mkdir(path, 0o700) == 0 { return }
        let why = errno
        var st = stat()
        guard why == EEXIST, lstat(path, &st) == 0 else {
            throw .configuration("cannot create \(path): \(String(cString: strerror(why)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw .configuration("\(path) exists and is not a folder (a symlink or a file); name a folder of your own")
        }
        guard st.st_uid == geteuid() else {
            throw .configuration("\(path) belongs to uid \(st.st_uid), not to you; name a folder of your own")
        }
        guard st.st_mode & 0o022 == 0 else {
            throw .configuration("\(path) is writable by others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 700 it or name another folder")
        }
    }

    /// Removes the folder and everything in it (symlinks inside are removed, not followed).
    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
