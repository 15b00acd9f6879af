/// One job of the fuzz suite as pushed: its bytes, the queue it goes to, and
/// the mutation that made it (`good` for an unmodified valid job).
public struct FuzzJob: Sendable {
    public var raw: [UInt8]
    public var mode: String
    public var family: String
    public var isGood: Bool { family == "good" }
}

/// A deterministic generator of hostile jobs: valid jobs of every mode, then
/// mutated the ways a careless or hostile producer would: numbers at the edges
/// of every range, wrong types in every field, CR/LF/NUL in every string,
/// duplicate keys, deep nesting, invalid UTF-8, truncation at every byte,
/// random byte flips, oversized jobs, values that are not objects.
///
/// The same seed gives the same jobs, so a failure can be replayed. Every job
/// carries its index (id `fz-INDEX` and a `fuzz INDEX` text), so jobs differ.
public struct HostileJobGenerator: Sendable {
    /// A job as a tree whose leaves are JSON text, so mutations can write anything, valid or not.
    indirect enum Node: Sendable {
        case raw([UInt8])
        case object([(String, Node)])
        case array([Node])

        func write(into out: inout [UInt8]) {
            switch self {
            case .raw(let b): out += b
            case .object(let members):
                out.append(UInt8(ascii: "{"))
                for (i, (k, v)) in members.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    out += Array("\"\(k)\":".utf8)
                    v.write(into: &out)
                }
                out.append(UInt8(ascii: "}"))
            case .array(let items):
                out.append(UInt8(ascii: "["))
                for (i, v) in items.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    v.write(into: &out)
                }
                out.append(UInt8(ascii: "]"))
            }
        }

        var bytes: [UInt8] {
            var out: [UInt8] = []
            write(into: &out)
            return out
        }

        /// Paths to every node below this one (object keys as strings, array indexes as ints).
        func paths(_ prefix: [PathStep] = []) -> [[PathStep]] {
            switch self {
            case .raw: return []
            case .object(let members):
                return members.enumerated().flatMap { i, m in [prefix + [.member(i)]] + m.1.paths(prefix + [.member(i)]) }
            case .array(let items):
                return items.enumerated().flatMap { i, v in [prefix + [.element(i)]] + v.paths(prefix + [.element(i)]) }
            }
        }

        func node(at path: ArraySlice<PathStep>) -> Node? {
            guard let step = path.first else { return self }
            switch (self, step) {
            case (.object(let m), .member(let i)) where i < m.count: return m[i].1.node(at: path.dropFirst())
            case (.array(let a), .element(let i)) where i < a.count: return a[i].node(at: path.dropFirst())
            default: return nil
            }
        }

        func replacing(_ path: ArraySlice<PathStep>, with f: (Node) -> Node) -> Node {
            guard let step = path.first else { return f(self) }
            switch (self, step) {
            case (.object(var m), .member(let i)) where i < m.count:
                m[i].1 = m[i].1.replacing(path.dropFirst(), with: f)
                return .object(m)
            case (.array(var a), .element(let i)) where i < a.count:
                a[i] = a[i].replacing(path.dropFirst(), with: f)
                return .array(a)
            default: return self
            }
        }

        func key(at path: [PathStep]) -> String? {
            guard case .member(let i)? = path.last, case .object(let m)? = node(at: path.dropLast()[...]) else { return nil }
            return m[i].0
        }
    }

    enum PathStep: Sendable { case member(Int), element(Int) }

    public let maxJobBytes: Int
    private var state: UInt64
    private var truncations = 0
    private var edges = 0

    static let edgeNumbers = [
        "1e308", "1e11", "-9223372036854775808", "1e400", "9223372036854775808", "-0", "-1", "1e20",
        "-1e308", "-1e400", "9223372036854775807", "-9223372036854775809", "18446744073709551616", "1e300", "-1e300",
        "-0.0", "0", "-1e-300", "2.5e-324", "1e13", "123456789012345678901234567890", "0.5", "1E+2", "4.0", "1e-7",
        "00", "-", "1.", ".5", "+1", "0x10",
    ]
    static let wrongTypes = ["null", "true", "false", "0", "-1", "1.5", "\"\"", "\"x\"", "[]", "{}", "[null]", "{\"a\":[]}", "\"fz\"", "[\"a\"]"]
    static let controlInserts: [[UInt8]] = [
        Array("\\r\\n".utf8), Array("\\u0000".utf8), Array("\\n".utf8), Array("\\r".utf8), Array("\\r\\nX-Injected: 1".utf8),
        Array("\\u0085\\u2028".utf8), Array("\\ud800".utf8), Array("\\udc00\\ud800".utf8), Array("\\t\\b\\f".utf8),
        [0x0D, 0x0A], [0x00], [0x0A], [0x1B], [0x7F],
    ]
    static let invalidUTF8: [[UInt8]] = [[0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xE2, 0x82], [0x80], [0xFE, 0xFF], [0xF4, 0x90, 0x80, 0x80]]
    static let notObjects = ["[]", "[1,2]", "\"job\"", "42", "null", "true", "", " ", "{", "}", "{}", "{\"id\":}", "\u{FEFF}{\"id\":\"bom\"}"]
    static let unknownFields = [("colour", "\"red\""), ("Id", "\"fz-x\""), ("ID", "1"), ("__proto__", "{}"), ("", "1"), ("not_after", "1")]

    public init(seed: UInt64, maxJobBytes: Int) {
        state = seed
        self.maxJobBytes = maxJobBytes
    }

    /// SplitMix64: small, fast, and the same everywhere.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }

    /// A valid job of `mode` that every farm configured with routes `fast` and `vec` answers with `done`.
    func template(_ index: Int, mode: String) -> Node {
        func s(_ text: String) -> Node { .raw(Array("\"\(text)\"".utf8)) }
        func n(_ text: String) -> Node { .raw(Array(text.utf8)) }
        var m: [(String, Node)] = [("id", s("fz-\(index)")), ("model", s(mode == "embed" ? "vec" : "fast"))]
        switch mode {
        case "chat":
            m.append(("messages", .array([
                .object([("role", s("system")), ("content", s("Be brief."))]),
                .object([("role", s("user")), ("content", s("fuzz \(index)"))]),
            ])))
        case "complete": m.append(("prompt", s("fuzz \(index)")))
        default: m.append(("input", .array([s("fuzz \(index)"), s("second")])))
        }
        m.append(("params", .object([
            ("max_tokens", n("16")), ("temperature", n("0.5")), ("top_p", n("0.9")), ("seed", n("7")), ("stop", .array([s("END")])),
        ])))
        m += [
            ("timeout_s", n("30")), ("deadline", n("4102444800")), ("max_attempts", n("2")),
            ("metadata", .object([("enqueued_at", n("1700000000.5")), ("n", n(String(index))), ("tenant", s("acme"))])),
            ("traceparent", s("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
            ("tenant", s("acme")), ("priority", s("normal")), ("not_before", n("1")),
        ]
        return .object(m)
    }

    /// The job with index `index`: about a fifth of them good, the rest hostile.
    public mutating func job(_ index: Int) -> FuzzJob {
        let mode = pick(["chat", "chat", "chat", "complete", "embed"])
        let base = template(index, mode: mode)
        let roll = below(100)
        func done(_ node: Node, _ family: String) -> FuzzJob { FuzzJob(raw: node.bytes, mode: mode, family: family) }
        func doneRaw(_ raw: [UInt8], _ family: String) -> FuzzJob { FuzzJob(raw: raw, mode: mode, family: family) }
        let paths = base.paths()
        switch roll {
        case 0..<20:
            return done(base, "good")
        case 20..<34:
            // A number at an edge, in a numeric field or anywhere else.
            let numeric = paths.filter { p in
                if case .raw(let b)? = base.node(at: p[...]), let c = b.first { return c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39) }
                return false
            }
            // Mostly every numeric field in turn with each edge value, the worst values first, so a
            // small run already covers every field; now and then any field with any value.
            var value: String
            let path: [PathStep]
            if below(4) == 0 {
                value = pick(Self.edgeNumbers)
                path = pick(paths)
            } else {
                value = Self.edgeNumbers[(edges / numeric.count) % Self.edgeNumbers.count]
                path = numeric[edges % numeric.count]
                edges += 1
            }
            // A valid not_before in the future would park the job for years; keep those in the past or invalid.
            if base.key(at: path) == "not_before", let d = Double(value), d > 1, d <= 1e10 { value = "1e11" }
            return done(base.replacing(path[...]) { _ in .raw(Array(value.utf8)) }, "edge_number")
        case 34..<46:
            let path = pick(paths)
            let value = pick(Self.wrongTypes)
            return done(base.replacing(path[...]) { _ in .raw(Array(value.utf8)) }, "wrong_type")
        case 46..<56:
            return done(insertIntoString(base, paths, pick(Self.controlInserts)), "control_chars")
        case 56..<61:
            return done(duplicateKey(base, paths), "duplicate_key")
        case 61..<66:
            let depth = pick([64, 126, 127, 128, 129, 200, 1000, 20_000])
            let open = below(2) == 0 ? "[" : "{\"a\":"
            let close = open == "[" ? "]" : "}"
            let nested: Node = .raw(Array((String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)).utf8))
            let path = below(3) == 0 ? pick(paths) : [PathStep.member(7)]  // metadata (index 7 in every template)
            return done(base.replacing(path[...]) { _ in nested }, "deep_nesting")
        case 66..<72:
            return done(insertIntoString(base, paths, pick(Self.invalidUTF8)), "invalid_utf8")
        case 72..<84:
            let bytes = base.bytes
            let cut = truncations % bytes.count
            truncations += 1
            return doneRaw(Array(bytes.prefix(cut)), "truncated")
        case 84..<86:
            return doneRaw(oversized(index, mode: mode), "oversized")
        case 86..<94:
            var bytes = base.bytes
            for _ in 0...below(4) { bytes[below(bytes.count)] = UInt8(truncatingIfNeeded: next()) }
            return doneRaw(bytes, "byte_flip")
        case 94..<97:
            return doneRaw(Array(pick(Self.notObjects).utf8), "not_an_object")
        default:
            let (k, v) = pick(Self.unknownFields)
            guard case .object(var m) = base else { return done(base, "good") }
            if below(2) == 0 {
                m.insert((k, .raw(Array(v.utf8))), at: below(m.count + 1))
            } else {
                m = m.map { $0.0 == "params" ? ("params", .object([("best_of", .raw(Array("2".utf8)))])) : $0 }
            }
            return done(.object(m), "unknown_field")
        }
    }

    /// Puts `insert` inside a string value (or key text) somewhere in the job.
    mutating func insertIntoString(_ base: Node, _ paths: [[PathStep]], _ insert: [UInt8]) -> Node {
        let strings = paths.filter { p in
            if case .raw(let b)? = base.node(at: p[...]) { return b.first == UInt8(ascii: "\"") }
            return false
        }
        let path = pick(strings)
        let at = below(8)
        return base.replacing(path[...]) { node in
            guard case .raw(let b) = node else { return node }
            let pos = 1 + min(at, b.count - 2)
            return .raw(Array(b[..<pos]) + insert + Array(b[pos...]))
        }
    }

    /// Repeats one member of some object, with the same or another value.
    mutating func duplicateKey(_ base: Node, _ paths: [[PathStep]]) -> Node {
        let objects = [[PathStep]()] + paths.filter { p in
            if case .object(let m)? = base.node(at: p[...]) { return !m.isEmpty }
            return false
        }
        let path = pick(objects)
        let sameValue = below(2) == 0
        let other = pick(Self.wrongTypes)
        return base.replacing(path[...]) { node in
            guard case .object(var m) = node else { return node }
            let i = below(m.count)
            let copy = (m[i].0, sameValue ? m[i].1 : Node.raw(Array(other.utf8)))
            m.insert(copy, at: below(m.count + 1))
            return .object(m)
        }
    }

    /// A job over `maxJobBytes`: padding in its text, the id first (answerable) or last (not).
    mutating func oversized(_ index: Int, mode: String) -> [UInt8] {
        let unit = pick(["x", "\\u0000", "é", "\\r\\n"])
        let pad = String(repeating: unit, count: maxJobBytes / unit.utf8.count + 1 + below(4096))
        let text = mode == "chat" ? #""messages":[{"role":"user","content":"\#(pad)"}]"# : mode == "complete" ? #""prompt":"\#(pad)""# : #""input":"\#(pad)""#
        let raw = below(3) == 0
            ? #"{"model":"fast",\#(text),"id":"fz-\#(index)"}"#
            : #"{"id":"fz-\#(index)","model":"fast",\#(text)}"#
        return Array(raw.utf8)
    }
}
