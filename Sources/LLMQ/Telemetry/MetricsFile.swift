import Foundation
import Logging
import ServiceLifecycle

/// How a supervised worker hands its metrics to the supervisor: it rewrites its
/// whole exposition into one file every `interval` (write to a temporary file,
/// then `rename`, so a reader never sees half of it), and once more when it
/// stops. The supervisor's /metrics reads the fresh files of its directory.
///
/// A file starts with the line `# llmq-worker: ID`, which becomes the `worker`
/// label of that file's series.
public struct MetricsFileWriter: Service {
    let path: String
    let worker: String
    let interval: Double
    let render: @Sendable () -> [UInt8]
    let logger: Logger

    public init(path: String, worker: String, interval: Double = 1, logger: Logger, render: @escaping @Sendable () -> [UInt8]) {
        self.path = path
        self.worker = worker
        self.interval = interval
        self.render = render
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            write()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(interval)) }
        }
        write()
    }

    func write() {
        var bytes = Array("# llmq-worker: \(worker)\n".utf8)
        bytes.append(contentsOf: render())
        do {
            try MetricsFiles.writeAtomically(bytes, to: path)
        } catch {
            logger.warning("cannot write the metrics file", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }
}

public enum MetricsFiles {
    /// Files not rewritten for this long belong to workers that stopped; they are left out.
    public static let maxAge: Double = 10

    /// Writes `path.tmp` and renames it to `path`. The temporary name is
    /// created afresh (O_EXCL, O_NOFOLLOW): whatever was left there, a stale file
    /// or a symlink someone planted, is unlinked, never followed or written through.
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let tmp = "\(path).tmp"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LLMQError(.internal, "open \(tmp): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                close(fd)
                throw LLMQError(.internal, "write \(tmp): \(String(cString: strerror(e)))")
            }
            written += n
        }
        close(fd)
        guard rename(tmp, path) == 0 else { throw LLMQError(.internal, "rename \(tmp): \(String(cString: strerror(errno)))") }
    }

    /// The fresh `.prom` files of a directory, as exposition sources labelled with their worker.
    public static func read(directory: String, now: Date = Date()) -> [MetricsExposition.Source] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".prom") }.sorted()
        var out: [MetricsExposition.Source] = []
        for name in names {
            let path = "\(directory)/\(name)"
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                  attributes[.type] as? FileAttributeType == .typeRegular,  // attributesOfItem does not follow symlinks
                  let modified = attributes[.modificationDate] as? Date,
                  now.timeIntervalSince(modified) < maxAge,
                  let data = FileManager.default.contents(atPath: path) else { continue }
            var bytes = Array(data)
            var worker = String(name.dropLast(5))
            let header = Array("# llmq-worker: ".utf8)
            if bytes.starts(with: header), let end = bytes.firstIndex(of: 0x0A) {
                worker = String(decoding: bytes[header.count..<end], as: UTF8.self)
                bytes.removeSubrange(0...end)
            }
            out.append(.init(worker: worker, text: bytes))
        }
        return out
    }
}
