import Foundation

/// Where a managed engine stands, as the supervisor tells its workers.
///
/// The supervisor and its workers share the farm's private folder (mode 0700,
/// see `PrivateDirectory`), so the exchange is two kinds of local file and no
/// Redis round trip: the supervisor rewrites `engine-NAME.state` (atomically,
/// by rename) whenever an engine changes state, and workers write the
/// provider's name to the FIFO `engines.fifo` when a job wants an engine (which
/// starts a lazy one and keeps it from its idle stop). A FIFO wakes the
/// supervisor at once without a signal handler or a socket; a worker that
/// finds no reader (ENXIO) simply goes on, and nothing outlives the farm.
public enum EngineState: Sendable, Equatable {
    case ready
    /// Starting or restarting: jobs wait in the delayed set.
    case starting
    /// A lazy engine not running: the first job that wants it starts it.
    case stopped
    /// It could not start within `ready_timeout_s`: jobs end `upstream_unavailable`.
    case failed(String)

    /// The variable that tells a worker the folder its supervisor's engines report in.
    public static let environmentKey = "LLMQ_ENGINE_DIR"

    public static func stateFile(_ dir: String, _ provider: String) -> String { "\(dir)/engine-\(provider).state" }
    public static func fifo(_ dir: String) -> String { "\(dir)/engines.fifo" }

    var text: String {
        switch self {
        case .ready: "ready\n"
        case .starting: "starting\n"
        case .stopped: "stopped\n"
        case .failed(let why): "failed \(why.replacingOccurrences(of: "\n", with: " "))\n"
        }
    }

    init?(text: String) {
        let line = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        switch line {
        case "ready": self = .ready
        case "starting": self = .starting
        case "stopped": self = .stopped
        default:
            guard line.hasPrefix("failed ") else { return nil }
            self = .failed(String(line.dropFirst(7)))
        }
    }

    /// Writes the state where workers read it: a temporary file renamed over the old one, so a reader never sees half.
    func write(dir: String, provider: String) {
        let path = Self.stateFile(dir, provider)
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)) else { return }
        rename(tmp, path)
    }

    static func read(dir: String, provider: String) -> EngineState? {
        guard let data = FileManager.default.contents(atPath: stateFile(dir, provider)) else { return nil }
        return EngineState(text: String(decoding: data, as: UTF8.self))
    }
}
