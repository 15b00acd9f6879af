import Foundation
import Logging

/// Copies an engine's standard output and error into the farm's log, a line at
/// a time with a prefix, on a thread of its own that ends when the engine (and
/// everything it started) closed the pipe.
enum EngineOutput {
    /// Longest line logged as is; longer ones are cut (a runaway progress bar must not fill memory).
    static let maxLine = 8192

    static func forward(fd: Int32, prefix: String, logger: Logger) {
        let t = Thread {
            defer { close(fd) }
            var pending: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 16384)
            func emit(_ line: ArraySlice<UInt8>) {
                var text = String(decoding: line.prefix(maxLine), as: UTF8.self)
                if text.hasSuffix("\r") { text.removeLast() }
                if !text.isEmpty { logger.info("\(prefix)\(text)") }
            }
            while true {
                let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buf[0..<n])
                while let nl = pending.firstIndex(of: 10) {
                    emit(pending[..<nl])
                    pending.removeSubrange(...nl)
                }
                if pending.count > maxLine {
                    emit(pending[...])
                    pending.removeAll()
                }
            }
            if !pending.isEmpty { emit(pending[...]) }
        }
        t.name = "llmq-engine-output"
        t.start()
    }
}
