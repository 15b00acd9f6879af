/// A validating, allocation-free JSON scanner over bytes, for the per-token
/// path: provider stream events are looked up by key and their string values
/// passed through still escaped, never decoded and re-encoded.
///
/// Every function takes the buffer and index ranges into it; `validate` must
/// have accepted the buffer before the lookups are used.
public struct JSONScanner {
    public let bytes: UnsafeBufferPointer<UInt8>
    public static let maxDepth = 128

    public init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// The range of the single top-level value, or nil when the bytes are not one valid JSON value.
    public func validate() -> Range<Int>? {
        var i = 0
        skipWS(&i)
        let start = i
        guard skipValue(&i, depth: 0) else { return nil }
        let end = i
        skipWS(&i)
        return i == bytes.count ? start..<end : nil
    }

    @inline(__always) func skipWS(_ i: inout Int) {
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { return }
        }
    }

    func skipValue(_ i: inout Int, depth: Int) -> Bool {
        guard i < bytes.count, depth < Self.maxDepth else { return false }
        switch bytes[i] {
        case UInt8(ascii: "\""): return skipString(&i)
        case UInt8(ascii: "{"):
            i += 1
            skipWS(&i)
            if i < bytes.count && bytes[i] == UInt8(ascii: "}") { i += 1; return true }
            while true {
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\""), skipString(&i) else { return false }
                skipWS(&i)
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return false }
                i += 1
                skipWS(&i)
                guard skipValue(&i, depth: depth + 1) else { return false }
                skipWS(&i)
                guard i < bytes.count else { return false }
                if bytes[i] == UInt8(ascii: ",") { i += 1; skipWS(&i); continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return true }
                return false
            }
        case UInt8(ascii: "["):
            i += 1
            skipWS(&i)
            if i < bytes.count && bytes[i] == UInt8(ascii: "]") { i += 1; return true }
            while true {
                guard skipValue(&i, depth: depth + 1) else { return false }
                skipWS(&i)
                guard i < bytes.count else { return false }
                if bytes[i] == UInt8(ascii: ",") { i += 1; skipWS(&i); continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return true }
                return false
            }
        case UInt8(ascii: "t"): return skipLiteral(&i, "true")
        case UInt8(ascii: "f"): return skipLiteral(&i, "false")
        case UInt8(ascii: "n"): return skipLiteral(&i, "null")
        default: return skipNumber(&i)
        }
    }

    private func skipLiteral(_ i: inout Int, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { return false }
        let w = word.utf8Start
        for k in 0..<n where bytes[i + k] != w[k] { return false }
        i += n
        return true
    }

    private func skipNumber(_ i: inout Int) -> Bool {
        let start = i
        if i < bytes.count && bytes[i] == UInt8(ascii: "-") { i += 1 }
        var digits = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1; digits += 1 }
        guard digits > 0 else { return false }
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            i += 1
            var frac = 0
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1; frac += 1 }
            guard frac > 0 else { return false }
        }
        if i < bytes.count && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            var exp = 0
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1; exp += 1 }
            guard exp > 0 else { return false }
        }
        return i > start
    }

    /// Skips a string, checking escapes, control characters and UTF-8.
    func skipString(_ i: inout Int) -> Bool {
        i += 1
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { i += 1; return true }
            if c == UInt8(ascii: "\\") {
                guard i + 1 < bytes.count else { return false }
                switch bytes[i + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                    UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 2
                case UInt8(ascii: "u"):
                    guard i + 5 < bytes.count else { return false }
                    for k in 2...5 where !Self.isHex(bytes[i + k]) { return false }
                    i += 6
                default: return false
                }
                continue
            }
            if c < 0x20 { return false }
            if c < 0x80 { i += 1; continue }
            guard let n = utf8Length(at: i) else { return false }
            i += n
        }
        return false
    }

    private static func isHex(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
    }

    private func utf8Length(at i: Int) -> Int? {
        let c = bytes[i]
        let n: Int
        let min: UInt32
        var v: UInt32
        if c & 0xE0 == 0xC0 { n = 2; v = UInt32(c & 0x1F); min = 0x80 }
        else if c & 0xF0 == 0xE0 { n = 3; v = UInt32(c & 0x0F); min = 0x800 }
        else if c & 0xF8 == 0xF0 { n = 4; v = UInt32(c & 0x07); min = 0x10000 }
        else { return nil }
        guard i + n <= bytes.count else { return nil }
        for k in 1..<n {
            let b = bytes[i + k]
            guard b & 0xC0 == 0x80 else { return nil }
            v = (v << 6) | UInt32(b & 0x3F)
        }
        guard v >= min, v <= 0x10FFFF, !(0xD800...0xDFFF).contains(v) else { return nil }
        return n
    }

    // MARK: lookups (on validated input)

    /// The value range of `key` in the object starting at `object.lowerBound`.
    public func member(_ object: Range<Int>, _ key: StaticString) -> Range<Int>? {
        var found: Range<Int>?
        forEachMember(object) { k, v in
            if found == nil && equals(k, key) { found = v }
        }
        return found
    }

    /// Calls `body` with the raw key range (inside the quotes) and value range of each member.
    public func forEachMember(_ object: Range<Int>, _ body: (Range<Int>, Range<Int>) -> Void) {
        var i = object.lowerBound
        guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { return }
        i += 1
        skipWS(&i)
        while i < object.upperBound, bytes[i] == UInt8(ascii: "\"") {
            let ks = i
            guard skipString(&i) else { return }
            let key = (ks + 1)..<(i - 1)
            skipWS(&i)
            i += 1  // ':'
            skipWS(&i)
            let vs = i
            guard skipValue(&i, depth: 0) else { return }
            body(key, vs..<i)
            skipWS(&i)
            if i < bytes.count && bytes[i] == UInt8(ascii: ",") { i += 1; skipWS(&i) } else { return }
        }
    }

    /// Calls `body` with the range of each element of the array at `array`.
    public func forEachElement(_ array: Range<Int>, _ body: (Int, Range<Int>) -> Void) {
        var i = array.lowerBound
        guard i < bytes.count, bytes[i] == UInt8(ascii: "[") else { return }
        i += 1
        skipWS(&i)
        var n = 0
        while i < array.upperBound, bytes[i] != UInt8(ascii: "]") {
            let vs = i
            guard skipValue(&i, depth: 0) else { return }
            body(n, vs..<i)
            n += 1
            skipWS(&i)
            if i < bytes.count && bytes[i] == UInt8(ascii: ",") { i += 1; skipWS(&i) } else { return }
        }
    }

    public func element(_ array: Range<Int>, _ index: Int) -> Range<Int>? {
        var found: Range<Int>?
        forEachElement(array) { n, r in if n == index { found = r } }
        return found
    }

    public func equals(_ raw: Range<Int>, _ key: StaticString) -> Bool {
        guard raw.count == key.utf8CodeUnitCount else { return false }
        let k = key.utf8Start
        var j = 0
        for i in raw {
            if bytes[i] != k[j] { return false }
            j += 1
        }
        return true
    }

    public func isString(_ r: Range<Int>) -> Bool { !r.isEmpty && bytes[r.lowerBound] == UInt8(ascii: "\"") }
    public func isObject(_ r: Range<Int>) -> Bool { !r.isEmpty && bytes[r.lowerBound] == UInt8(ascii: "{") }
    public func isArray(_ r: Range<Int>) -> Bool { !r.isEmpty && bytes[r.lowerBound] == UInt8(ascii: "[") }
    public func isNull(_ r: Range<Int>) -> Bool { !r.isEmpty && bytes[r.lowerBound] == UInt8(ascii: "n") }

    /// The escaped body of a string value (without its quotes), ready to copy into another JSON string.
    public func stringBody(_ r: Range<Int>) -> UnsafeBufferPointer<UInt8>? {
        guard isString(r) else { return nil }
        return UnsafeBufferPointer(rebasing: bytes[(r.lowerBound + 1)..<(r.upperBound - 1)])
    }

    /// A string value decoded (escapes resolved), for rare fields such as finish reasons.
    public func string(_ r: Range<Int>) -> String? {
        guard isString(r) else { return nil }
        return unescape((r.lowerBound + 1)..<(r.upperBound - 1))
    }

    /// A whole number, or nil when the value is not one or does not fit an `Int`
    /// (`1e300`, `2^64`): hostile input must never trap, so callers treat nil as
    /// "absent or out of range". `-2^63` is `Int.min`; `3.0` and `3e2` are whole.
    public func int(_ r: Range<Int>) -> Int? {
        guard !r.isEmpty else { return nil }
        var v = 0
        var i = r.lowerBound
        let neg = bytes[i] == UInt8(ascii: "-")
        if neg { i += 1 }
        guard i < r.upperBound else { return nil }
        while i < r.upperBound {
            let c = bytes[i]
            guard c >= 0x30 && c <= 0x39 else { return double(r).flatMap { Int(exactly: $0) } }
            // Accumulated on the negative side, which holds one more value than the positive one.
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.subtractingReportingOverflow(Int(c - 0x30))
            if o1 || o2 { return nil }
            v = s
            i += 1
        }
        if neg { return v }
        return v == .min ? nil : -v
    }

    /// A number as a `Double`; `1e400` is infinite, so callers that need a finite value check `isFinite`.
    public func double(_ r: Range<Int>) -> Double? {
        Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[r]), as: UTF8.self))
    }

    public func raw(_ r: Range<Int>) -> UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(rebasing: bytes[r]) }
}
