import ArgumentParser
import Foundation
import LLMQ

struct DeadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead",
        abstract: "Manage the dead-letter lists: jobs that failed for good.",
        subcommands: [List.self, Retry.self, Purge.self])

    /// Which entries a command acts on.
    struct Selection: ParsableArguments {
        @OptionGroup var client: ClientOptions

        @Option(name: .long, help: "Only this mode (default: every mode found).")
        var mode: Mode?

        @Option(name: .long, help: "Only the entries of this request id (repeatable).")
        var id: [String] = []

        func entries(_ inspector: FarmInspector) throws -> [FarmInspector.DeadEntry] {
            let modes = try mode.map { [$0] } ?? inspector.modes()
            var out: [FarmInspector.DeadEntry] = []
            for m in modes { out += try inspector.deadEntries(mode: m) }
            return id.isEmpty ? out : out.filter { $0.id.map(id.contains) ?? false }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead jobs, newest first: when, mode, id, error code, attempt, reason.")

        @OptionGroup var selection: Selection

        @Option(name: .long, help: "Entries to show per mode.")
        var limit: Int = 50

        @Flag(name: .long, help: "Print the entries as stored (NDJSON).")
        var json = false

        func run() async throws {
            let inspector = try FarmInspector(url: try selection.client.url, keys: selection.client.keys)
            let entries = try selection.entries(inspector)
            var shown: [Mode: Int] = [:]
            let picked = entries.filter { e in
                shown[e.mode, default: 0] += 1
                return shown[e.mode]! <= limit
            }
            if json {
                for e in picked { print(String(decoding: e.raw, as: UTF8.self)) }
                return
            }
            guard !entries.isEmpty else {
                print("no dead jobs")
                return
            }
            let rows = picked.map { e -> [String] in
                let at = e.at.map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: $0)) } ?? "-"
                let reason = e.reason.count > 100 ? String(e.reason.prefix(99)) + "…" : e.reason
                return [at, e.mode.rawValue, e.id ?? "-", e.code, e.fields["attempt"]?.intValue.map(String.init) ?? "-", reason]
            }
            print(StatsView.table(["AT", "MODE", "REQUEST", "CODE", "ATTEMPT", "REASON"], rows, right: [4]), terminator: "")
            if picked.count < entries.count { print("(\(entries.count - picked.count) more; --limit N shows more)") }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Push dead jobs back onto their queue with a fresh attempt count (--id, or --all).",
            discussion: "With --all, entries whose job was malformed (invalid_job) are skipped: they would fail again. Name them with --id to push them anyway.")

        @OptionGroup var selection: Selection

        @Flag(name: .long, help: "Retry every selected entry (required without --id).")
        var all = false

        func validate() throws {
            guard all || !selection.id.isEmpty else { throw ValidationError("say which: --id ID (repeatable) or --all") }
        }

        func run() async throws {
            let inspector = try FarmInspector(url: try selection.client.url, keys: selection.client.keys)
            var queued = 0, skipped = 0
            for e in try selection.entries(inspector) {
                if selection.id.isEmpty && e.code == "invalid_job" {
                    skipped += 1
                    continue
                }
                switch try inspector.retry(e) {
                case .queued:
                    queued += 1
                    print("queued \(e.id ?? "?") on \(e.mode)")
                case .gone:
                    print("\(e.id ?? "?"): already gone from the dead list")
                case .skipped(let why):
                    skipped += 1
                    print("skipped \(e.id ?? "?"): \(why)")
                }
            }
            print("\(queued) queued again\(skipped > 0 ? ", \(skipped) skipped" : "")")
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete dead jobs for good (--id, or --all).")

        @OptionGroup var selection: Selection

        @Flag(name: .long, help: "Delete every selected entry (required without --id).")
        var all = false

        func validate() throws {
            guard all || !selection.id.isEmpty else { throw ValidationError("say which: --id ID (repeatable) or --all") }
        }

        func run() async throws {
            let inspector = try FarmInspector(url: try selection.client.url, keys: selection.client.keys)
            var removed = 0
            if selection.id.isEmpty {
                for m in try selection.mode.map({ [$0] }) ?? inspector.modes() { removed += try inspector.purgeAll(mode: m) }
            } else {
                removed = try inspector.purge(try selection.entries(inspector))
            }
            print("\(removed) dead \(removed == 1 ? "job" : "jobs") deleted")
        }
    }
}

struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Ask workers to drain: stop taking jobs, finish those they hold, then exit.",
        discussion: "Sets PREFIX:control:WORKER to \"drain\" (expiring after --ttl seconds); each worker checks it with its heartbeat. `llmq stats` shows their state.")

    @OptionGroup var client: ClientOptions

    @Flag(name: .long, help: "Every worker in PREFIX:workers.")
    var all = false

    @Option(name: .long, help: "Seconds the request stays for a worker that has not seen it yet.")
    var ttl: Int = 600

    @Argument(help: "Worker ids, as `llmq stats` shows them.")
    var workers: [String] = []

    func validate() throws {
        guard all != !workers.isEmpty else { throw ValidationError("name the workers to drain, or --all (not both)") }
        guard ttl >= 1 else { throw ValidationError("--ttl must be at least 1") }
    }

    func run() async throws {
        let inspector = try FarmInspector(url: try client.url, keys: client.keys)
        let known = Set(try inspector.workerIDs())
        let targets = all ? known.sorted() : workers
        if targets.isEmpty { print("no workers registered under prefix \(client.keys.prefix)") }
        for w in targets {
            try inspector.requestDrain(worker: w, ttl: ttl)
            print("asked \(w) to drain\(known.contains(w) ? "" : " (not registered now; it drains if it starts within \(ttl) s)")")
        }
    }
}
