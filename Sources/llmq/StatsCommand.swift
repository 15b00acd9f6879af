import ArgumentParser
import Foundation
import LLMQ

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show queue depths, delayed jobs, live workers with their load and heartbeat age, jobs in flight, and dead letters.")

    @OptionGroup var client: ClientOptions

    @Option(name: .long, help: "A mode to show besides those found (repeatable).")
    var mode: [Mode] = []

    @Option(name: .long, help: "Jobs in flight to list.")
    var jobs: Int = 10

    @Flag(name: .long, help: "Print one JSON object instead of tables.")
    var json = false

    @Flag(name: .long, help: "Refresh in place until Ctrl-C.")
    var watch = false

    @Option(name: .long, help: "Seconds between refreshes with --watch.")
    var interval: Double = 1

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
        guard jobs >= 0 else { throw ValidationError("--jobs must be 0 or more") }
    }

    func run() async throws {
        let url = try client.url
        let keys = client.keys
        guard watch else {
            let inspector = try FarmInspector(url: url, keys: keys)
            let snap = try inspector.snapshot(modes: try inspector.modes(including: mode), jobLimit: jobs)
            print(json ? StatsView.json(snap, keys: keys).jsonString : StatsView.text(snap, url: url, keys: keys), terminator: json ? "\n" : "")
            return
        }
        var inspector: FarmInspector?
        while true {
            var screen: String
            do {
                if inspector == nil { inspector = try FarmInspector(url: url, keys: keys) }
                let snap = try inspector!.snapshot(modes: try inspector!.modes(including: mode), jobLimit: jobs)
                screen = json ? StatsView.json(snap, keys: keys).jsonString + "\n" : StatsView.text(snap, url: url, keys: keys)
            } catch {
                inspector = nil
                screen = "cannot read the farm at \(url): \(error.message)\nretrying every \(interval) s\n"
            }
            if json {
                FileHandle.standardOutput.write(Data(screen.utf8))
            } else {
                // Home, the new screen with each line's rest cleared, then the rest of the screen cleared.
                let body = screen.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\u{1B}[K\n")
                FileHandle.standardOutput.write(Data("\u{1B}[H\(body)\u{1B}[J(every \(interval) s; Ctrl-C to stop)".utf8))
            }
            try await Task.sleep(for: .seconds(interval))
        }
    }
}

/// How `llmq stats` shows a snapshot.
enum StatsView {
    static func text(_ s: FarmInspector.Snapshot, url: RedisURL, keys: Keys) -> String {
        let time = DateFormatter.localizedString(from: Date(timeIntervalSince1970: s.at), dateStyle: .none, timeStyle: .medium)
        var out = "llmq farm at \(url), prefix \(keys.prefix), \(time)\n\n"
        out += table(["MODE", "PENDING", "IN-FLIGHT", "DELAYED", "DUE", "NEXT DUE", "DEAD"], s.modes.map { m in
            [m.mode.rawValue, "\(m.pending)", "\(m.inflight)", "\(m.delayed)", "\(m.delayedDue)",
             m.nextDueIn.map { $0 <= 0 ? "now" : "in " + duration($0) } ?? "-", "\(m.dead)"]
        }, right: [1, 2, 3, 4, 6])
        if s.delayedTotal > 0 {
            out += "  (delayed: waiting in Redis for a retry backoff, a provider cooldown or not_before; due ones go back to the queue)\n"
        }
        for m in s.modes where m.shards > 1 { out += "  (\(m.mode): summed over \(m.shards) shards)\n" }
        let tenants = s.modes.flatMap { m in m.tenants.map { (m.mode, $0) } }
        if !tenants.isEmpty {
            out += "\nTENANTS (fair modes)\n"
            out += table(["MODE", "TENANT", "WAITING", "RUNNING"], tenants.map { m, t in
                [m.rawValue, t.tenant.isEmpty ? "(none)" : t.tenant, "\(t.waiting)", "\(t.running)"]
            }, right: [2, 3])
        }
        let live = s.workers.filter { ($0.heartbeatAge ?? .infinity) <= 5 }.count
        out += "\nWORKERS: \(live) live\(s.workers.count > live ? ", \(s.workers.count - live) lost (jobs return when reaped)" : "")\n"
        if !s.workers.isEmpty {
            out += table(["WORKER", "HOST", "PID", "STATE", "HEARTBEAT", "UPTIME", "LOAD"], s.workers.map { w in
                let load = w.modes.map { m in "\(m) \(w.inflight[m] ?? 0)\(w.capacity[m].map { "/\($0)" } ?? "")" }.joined(separator: ", ")
                return [w.id, w.host, w.pid.map(String.init) ?? "-", w.state, w.heartbeatAge.map { duration($0) + " ago" } ?? "expired",
                        w.uptime.map(duration) ?? "-", load]
            }, right: [2])
        }
        out += "\nIN FLIGHT: \(s.inflightTotal)\(s.inflightTotal > s.inflightJobs.count ? " (showing \(s.inflightJobs.count))" : "")\n"
        if !s.inflightJobs.isEmpty {
            out += table(["MODE", "WORKER", "REQUEST", "MODEL", "ATTEMPT"],
                         s.inflightJobs.map { [$0.mode.rawValue, $0.worker, $0.id, $0.model, "\($0.attempts + 1)"] }, right: [4])
        }
        out += "\nDEAD LETTERS: \(s.deadTotal)\(s.deadTotal > 0 ? "  (llmq dead list)" : "")\n"
        return out
    }

    static func byName(_ counts: [Mode: Int]) -> [String: JSONValue] {
        Dictionary(uniqueKeysWithValues: counts.map { ($0.key.rawValue, JSONValue.int($0.value)) })
    }

    static func json(_ s: FarmInspector.Snapshot, keys: Keys) -> JSONValue {
        .object([
            "at": .double(s.at), "prefix": .string(keys.prefix),
            "modes": .array(s.modes.map { m in
                [
                    "mode": .string(m.mode.rawValue), "pending": .int(m.pending), "inflight": .int(m.inflight), "dead": .int(m.dead),
                    "delayed": .int(m.delayed), "delayed_due": .int(m.delayedDue),
                    "next_due_in_s": m.nextDueIn.map { .double(($0 * 1000).rounded() / 1000) } ?? .null,
                    "shards": .int(m.shards),
                    "tenants": .array(m.tenants.map { ["tenant": .string($0.tenant), "waiting": .int($0.waiting), "running": .int($0.running)] }),
                ]
            }),
            "workers": .array(s.workers.map { w in
                .object([
                    "id": .string(w.id), "host": .string(w.host), "pid": w.pid.map { .int($0) } ?? .null, "state": .string(w.state),
                    "heartbeat_age_s": w.heartbeatAge.map { .double(($0 * 1000).rounded() / 1000) } ?? .null,
                    "uptime_s": w.uptime.map { .double($0.rounded()) } ?? .null,
                    "modes": .array(w.modes.map { .string($0.rawValue) }),
                    "inflight": .object(byName(w.inflight)),
                    "capacity": .object(byName(w.capacity)),
                ])
            }),
            "inflight_jobs": .array(s.inflightJobs.map {
                ["mode": .string($0.mode.rawValue), "worker": .string($0.worker), "id": .string($0.id), "model": .string($0.model), "attempt": .int($0.attempts + 1)]
            }),
            "inflight_total": .int(s.inflightTotal), "dead_total": .int(s.deadTotal), "delayed_total": .int(s.delayedTotal),
        ])
    }

    static func duration(_ s: Double) -> String {
        if s < 10 { return String(format: "%.1fs", s) }
        if s < 120 { return "\(Int(s))s" }
        if s < 7200 { return "\(Int(s / 60))m" }
        if s < 172_800 { return "\(Int(s / 3600))h" }
        return "\(Int(s / 86400))d"
    }

    /// Columns padded to their widest cell; `right` names the right-aligned columns.
    static func table(_ header: [String], _ rows: [[String]], right: Set<Int> = []) -> String {
        var width = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { width[i] = max(width[i], c.count) } }
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { i, c in
                let pad = String(repeating: " ", count: width[i] - c.count)
                return right.contains(i) ? pad + c : c + pad
            }
            var l = "  " + padded.joined(separator: "  ")
            while l.hasSuffix(" ") { l.removeLast() }
            return l + "\n"
        }
        return line(header) + rows.map(line).joined()
    }
}
