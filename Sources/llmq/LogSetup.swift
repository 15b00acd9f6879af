import Foundation
import LLMQ
import Logging

enum LogSetup {
    /// Chooses the log backend once per process: text or JSON lines on stderr.
    static func bootstrap(level: String, format: String) {
        let lvl = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            var h: any LogHandler = format == "json" ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            h.logLevel = lvl
            return h
        }
    }
}
