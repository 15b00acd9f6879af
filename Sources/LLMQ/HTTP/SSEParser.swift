/// Incremental Server-Sent Events parser. Bytes go in as they arrive, in any
/// split (mid-line, mid-character); whole events come out.
///
/// Complete lines are read in place from the input; only a line cut by a
/// buffer boundary is copied. Buffers are reused, so steady-state parsing
/// does not allocate.
///
/// What an upstream can make it hold is capped: a line longer than
/// `maxLineBytes`, or an event whose `data:` lines add up to more than
/// `maxEventBytes`, stops the parse (`feed` returns false, `overflow` says why)
/// instead of growing a buffer until the request times out.
public struct SSEParser {
    /// Which cap a stream broke.
    public enum Overflow: Sendable, Equatable {
        /// A line ran past `maxLineBytes` without its end.
        case line
        /// One event's data ran past `maxEventBytes` without the blank line that ends it.
        case event
    }

    /// The default cap of one line and of one event's data: 1 MiB.
    public static let defaultLimit = 1 << 20

    public let maxLineBytes: Int
    public let maxEventBytes: Int
    /// Set when a cap stopped the parse.
    public private(set) var overflow: Overflow?
    private var carry: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var event: [UInt8] = []
    private var lastWasCR = false

    public init(maxLineBytes: Int = SSEParser.defaultLimit, maxEventBytes: Int = SSEParser.defaultLimit) {
        self.maxLineBytes = maxLineBytes
        self.maxEventBytes = maxEventBytes
        carry.reserveCapacity(512)
        data.reserveCapacity(512)
    }

    /// Feeds bytes; `onEvent(eventName, data)` is called for each complete event.
    /// Returning false from `onEvent` stops parsing and makes `feed` return false.
    public mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>, _ onEvent: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        var i = 0
        let n = bytes.count
        // An empty read must not forget a CR that ended the previous one (its LF may come next).
        guard n > 0 else { return overflow == nil }
        if lastWasCR && bytes[0] == 0x0A { i = 1 }
        lastWasCR = false
        var lineStart = i
        guard overflow == nil else { return false }
        while i < n {
            let c = bytes[i]
            if c == 0x0A || c == 0x0D {
                if carry.count + (i - lineStart) > maxLineBytes { overflow = .line; return false }
                let ok: Bool
                if carry.isEmpty {
                    ok = line(UnsafeBufferPointer(rebasing: bytes[lineStart..<i]), onEvent)
                } else {
                    carry.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[lineStart..<i]))
                    // Borrowed out of `self` for `line`, and given back emptied (see `Handoff` on emptying a copy).
                    var taken: [UInt8] = []
                    swap(&taken, &carry)
                    ok = taken.withUnsafeBufferPointer { line($0, onEvent) }
                    taken.removeAll(keepingCapacity: true)
                    swap(&taken, &carry)
                }
                if !ok { return false }
                if c == 0x0D {
                    if i + 1 < n { if bytes[i + 1] == 0x0A { i += 1 } } else { lastWasCR = true }
                }
                lineStart = i + 1
            }
            i += 1
        }
        if lineStart < n {
            if carry.count + (n - lineStart) > maxLineBytes { overflow = .line; return false }
            carry.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[lineStart..<n]))
        }
        return true
    }

    /// Ends the stream: an event without its closing blank line is still delivered.
    public mutating func finish(_ onEvent: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        guard overflow == nil else { return false }
        if !carry.isEmpty {
            let taken = carry
            carry.removeAll()
            if !taken.withUnsafeBufferPointer({ line($0, onEvent) }) { return false }
        }
        return dispatch(onEvent)
    }

    private mutating func line(_ l: UnsafeBufferPointer<UInt8>, _ onEvent: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        if l.isEmpty { return dispatch(onEvent) }
        if l[0] == UInt8(ascii: ":") { return true }
        var colon = 0
        while colon < l.count && l[colon] != UInt8(ascii: ":") { colon += 1 }
        var v = colon + 1
        if v < l.count && l[v] == 0x20 { v += 1 }
        let value = v <= l.count ? UnsafeBufferPointer(rebasing: l[min(v, l.count)...]) : UnsafeBufferPointer(rebasing: l[l.count...])
        if colon == 4 && l[0] == UInt8(ascii: "d") && l[1] == UInt8(ascii: "a") && l[2] == UInt8(ascii: "t") && l[3] == UInt8(ascii: "a") {
            if data.count + value.count + 1 > maxEventBytes { overflow = .event; return false }
            if hasData { data.append(0x0A) }
            data.append(contentsOf: value)
            hasData = true
        } else if colon == 5 && l[0] == UInt8(ascii: "e") && l[1] == UInt8(ascii: "v") && l[2] == UInt8(ascii: "e") && l[3] == UInt8(ascii: "n") && l[4] == UInt8(ascii: "t") {
            event.removeAll(keepingCapacity: true)
            event.append(contentsOf: value)
        }
        return true
    }

    private mutating func dispatch(_ onEvent: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        guard hasData else {
            event.removeAll(keepingCapacity: true)
            return true
        }
        let ok = event.withUnsafeBufferPointer { e in data.withUnsafeBufferPointer { d in onEvent(e, d) } }
        data.removeAll(keepingCapacity: true)
        event.removeAll(keepingCapacity: true)
        hasData = false
        return ok
    }
}
