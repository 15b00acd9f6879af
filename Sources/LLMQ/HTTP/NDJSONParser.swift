/// Incremental splitter for newline-delimited JSON (Ollama's streams). Bytes go
/// in as they arrive, in any split; each complete, non-blank line comes out.
///
/// Like `SSEParser`, complete lines are handed over in place from the input;
/// only a line cut by a buffer boundary is copied, into a reused buffer.
///
/// A line longer than `maxLineBytes` stops the parse (`feed` returns false and
/// `overflowed` is set) instead of growing a buffer until the request times out.
public struct NDJSONParser {
    public let maxLineBytes: Int
    /// Set when a line ran past `maxLineBytes`.
    public private(set) var overflowed = false
    private var carry: [UInt8] = []

    public init(maxLineBytes: Int = SSEParser.defaultLimit) {
        self.maxLineBytes = maxLineBytes
        carry.reserveCapacity(512)
    }

    /// Feeds bytes; `onLine` gets each complete line without its `\n` (or `\r\n`).
    /// Returning false from `onLine` stops parsing and makes `feed` return false.
    public mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>, _ onLine: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        var lineStart = 0
        var i = 0
        let n = bytes.count
        guard !overflowed else { return false }
        while i < n {
            if bytes[i] == 0x0A {
                if carry.count + (i - lineStart) > maxLineBytes { overflowed = true; return false }
                let ok: Bool
                if carry.isEmpty {
                    ok = Self.deliver(UnsafeBufferPointer(rebasing: bytes[lineStart..<i]), onLine)
                } else {
                    carry.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[lineStart..<i]))
                    ok = carry.withUnsafeBufferPointer { Self.deliver($0, onLine) }
                    carry.removeAll(keepingCapacity: true)
                }
                if !ok { return false }
                lineStart = i + 1
            }
            i += 1
        }
        if lineStart < n {
            if carry.count + (n - lineStart) > maxLineBytes { overflowed = true; return false }
            carry.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[lineStart..<n]))
        }
        return true
    }

    /// Ends the stream: a last line without its newline is still delivered.
    public mutating func finish(_ onLine: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        guard !overflowed else { return false }
        guard !carry.isEmpty else { return true }
        defer { carry.removeAll() }
        return carry.withUnsafeBufferPointer { Self.deliver($0, onLine) }
    }

    private static func deliver(_ line: UnsafeBufferPointer<UInt8>, _ onLine: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        var end = line.count
        if end > 0 && line[end - 1] == 0x0D { end -= 1 }
        var start = 0
        while start < end && (line[start] == 0x20 || line[start] == 0x09) { start += 1 }
        guard start < end else { return true }
        return onLine(UnsafeBufferPointer(rebasing: line[start..<end]))
    }
}
