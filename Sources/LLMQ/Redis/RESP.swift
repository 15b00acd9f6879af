/// Encodes Redis commands as RESP into byte buffers, so a whole batch can be
/// written to the connection in one go.
public enum RESP {
    @inline(__always) static func appendHeader(_ c: UInt8, _ n: Int, to out: inout [UInt8]) {
        out.append(c)
        JSONWriter.appendInt(n, to: &out)
        out.append(0x0D)
        out.append(0x0A)
    }

    public static func appendArrayHeader(_ count: Int, to out: inout [UInt8]) {
        appendHeader(UInt8(ascii: "*"), count, to: &out)
    }

    public static func appendBulk(_ b: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        appendHeader(UInt8(ascii: "$"), b.count, to: &out)
        out.append(contentsOf: b)
        out.append(0x0D)
        out.append(0x0A)
    }

    public static func appendBulk(_ b: [UInt8], to out: inout [UInt8]) {
        b.withUnsafeBufferPointer { appendBulk($0, to: &out) }
    }

    public static func appendBulk(_ s: String, to out: inout [UInt8]) {
        var s = s
        s.withUTF8 { appendBulk($0, to: &out) }
    }

    public static func appendCommand(_ args: [String], to out: inout [UInt8]) {
        appendArrayHeader(args.count, to: &out)
        for a in args { appendBulk(a, to: &out) }
    }

    /// Appends a command whose arguments are strings except the last, given as bytes.
    public static func appendCommand(_ args: [String], last: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        appendArrayHeader(args.count + 1, to: &out)
        for a in args { appendBulk(a, to: &out) }
        appendBulk(last, to: &out)
    }

    public static func appendCommand(_ args: [String], last: [UInt8], to out: inout [UInt8]) {
        last.withUnsafeBufferPointer { appendCommand(args, last: $0, to: &out) }
    }

    public static func command(_ args: [String]) -> [UInt8] {
        var out: [UInt8] = []
        appendCommand(args, to: &out)
        return out
    }
}
