import Foundation
import Logging

/// Writes one JSON object per log record to stderr: time, level, label,
/// message and metadata (`request_id`, `worker`, `provider`, `model`, `attempt` …).
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let level = event.level, message = event.message, extra = event.metadata
        var o: [String: JSONValue] = [
            "ts": .double((Clock.unixTime() * 1000).rounded() / 1000), "level": .string(level.rawValue),
            "label": .string(label), "msg": .string("\(message)"),
        ]
        for (k, v) in metadata.merging(extra ?? [:], uniquingKeysWith: { $1 }) { o[k] = .string("\(v)") }
        var bytes = JSONValue.object(o).jsonBytes
        bytes.append(0x0A)
        bytes.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
    }
}
