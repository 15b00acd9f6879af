import Foundation

/// Merges Prometheus text expositions: a process's own registry and those of
/// the worker processes it supervises, each child's series labelled with its
/// worker id, one `# HELP` and `# TYPE` per family (help text from
/// `MetricCatalog`), families in name order.
///
/// Runs once per scrape, not on the per-token path, so it works on strings.
public enum MetricsExposition {
    public struct Source: Sendable {
        /// Value of the `worker` label added to every series, or nil to leave them as they are.
        public var worker: String?
        public var text: [UInt8]

        public init(worker: String?, text: [UInt8]) {
            self.worker = worker
            self.text = text
        }
    }

    private struct Family {
        var type: String?
        var help: String?
        var samples: [Substring] = []
    }

    public static func merge(_ sources: [Source]) -> [UInt8] {
        var families: [String: Family] = [:]
        for source in sources {
            let text = String(decoding: source.text, as: UTF8.self)
            var current: String?
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                if line.hasPrefix("#") {
                    let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true)
                    guard parts.count >= 3 else { continue }
                    let name = String(parts[2])
                    if parts[1] == "TYPE" {
                        current = name
                        if families[name]?.type == nil { families[name, default: Family()].type = parts.count > 3 ? String(parts[3]) : nil }
                    } else if parts[1] == "HELP", families[name]?.help == nil {
                        families[name, default: Family()].help = parts.count > 3 ? String(parts[3]) : ""
                    }
                    continue
                }
                let name = metricName(line)
                let family = current.flatMap { belongs(name, to: $0) ? $0 : nil } ?? String(name)
                let sample = source.worker.map { labelled(line, nameLength: name.count, worker: $0) } ?? line
                families[family, default: Family()].samples.append(sample)
            }
        }
        var out = ""
        for name in families.keys.sorted() {
            let f = families[name]!
            guard !f.samples.isEmpty else { continue }
            let known = MetricCatalog.byName[name]
            if let help = known.map({ escapeHelp($0.help) }) ?? f.help { out += "# HELP \(name) \(help)\n" }
            out += "# TYPE \(name) \(f.type ?? known?.type ?? "untyped")\n"
            for s in f.samples {
                out += s
                out += "\n"
            }
        }
        return Array(out.utf8)
    }

    /// The metric name of a sample line: everything before `{` or the first space.
    static func metricName(_ line: Substring) -> Substring {
        line.prefix { $0 != "{" && $0 != " " }
    }

    /// Whether a sample named `name` is part of `family` (histogram and summary series carry suffixes).
    static func belongs(_ name: Substring, to family: String) -> Bool {
        guard name.hasPrefix(family) else { return false }
        let rest = name.dropFirst(family.count)
        return rest.isEmpty || ["_bucket", "_sum", "_count", "_created", "_total"].contains(rest)
    }

    static func labelled(_ line: Substring, nameLength: Int, worker: String) -> Substring {
        let name = line.prefix(nameLength)
        let rest = line.dropFirst(nameLength)
        let label = "worker=\"\(escapeLabel(worker))\""
        if rest.hasPrefix("{") {
            let inner = rest.dropFirst()
            return inner.hasPrefix("}") ? "\(name){\(label)\(inner)" : "\(name){\(label),\(inner)"
        }
        return "\(name){\(label)}\(rest)"
    }

    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }
}
