/// Numbers from upstreams, read so that no value can trap: token counts are clamped
/// into `0...Usage.maxCount`, indexes must be whole numbers within `0...Int32.max`.
/// `1e300`, `-1`, `2^64` and `-2^63` are all ordinary input here.
extension JSONScanner {
    /// A token count, clamped to `0...Usage.maxCount`; nil when the value is not a number.
    func count(_ r: Range<Int>) -> Int? {
        guard let v = finiteNumber(r) else { return nil }
        if v <= 0 { return 0 }
        return v >= Double(Usage.maxCount) ? Usage.maxCount : Int(v)
    }

    /// An index: a whole number within `0...Int32.max`; nil for anything else (the caller
    /// decides whether that fails the stream).
    func index(_ r: Range<Int>) -> Int? {
        guard let v = finiteNumber(r), v >= 0, v <= Double(Int32.max), v.rounded(.towardZero) == v else { return nil }
        return Int(v)
    }

    /// The value as a finite Double; short runs of digits are read directly (the per-event path).
    private func finiteNumber(_ r: Range<Int>) -> Double? {
        guard !r.isEmpty else { return nil }
        var i = r.lowerBound
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        if i < r.upperBound && r.upperBound - i <= 15 {
            var v = 0
            var digits = true
            for k in i..<r.upperBound {
                let c = bytes[k]
                guard c >= 0x30 && c <= 0x39 else { digits = false; break }
                v = v * 10 + Int(c - 0x30)
            }
            if digits { return Double(negative ? -v : v) }
        }
        guard r.count <= 64, let d = double(r), d.isFinite else { return nil }
        return d
    }
}
