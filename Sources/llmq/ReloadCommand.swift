import ArgumentParser
import Foundation
import LLMQ

struct ReloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Ask every farm on this Redis and prefix to read its configuration again and roll its workers.",
        discussion: """
            Publishes {"op":"reload","reply":KEY} on PREFIX:farms:control; each farm checks its own configuration file, \
            refuses an invalid one (and keeps running as it was), or rolls its workers one at a time, then pushes its \
            outcome to KEY. Exits 0 when every farm that heard the request reported done, 1 otherwise. \
            `kill -HUP` on a farm's pid does the same for that farm alone.
            """)

    @OptionGroup var client: ClientOptions

    @Option(name: .long, help: "Seconds to wait for the farms' outcomes (a roll drains each worker in turn).")
    var timeout: Double = 600

    func validate() throws {
        guard timeout > 0 && timeout.isFinite else { throw ValidationError("--timeout must be a positive number of seconds") }
    }

    func run() async throws {
        let keys = client.keys
        let connection = try RedisConnection(try client.url)
        let reply = "\(keys.prefix):farms:reply:\(UUID().uuidString.lowercased())"
        let heard = try connection.command(["PUBLISH", ReloadController.channel(keys), ReloadRequest(reply: reply).json]).integer ?? 0
        guard heard > 0 else {
            print("no farm listens on \(ReloadController.channel(keys)); is one running with prefix \(keys.prefix) on this Redis?")
            throw ExitCode(1)
        }
        print("asked \(heard) farm\(heard == 1 ? "" : "s") to reload; waiting for their outcomes")
        var ok = true
        let end = Date().addingTimeInterval(timeout)
        var received = 0
        while received < heard {
            let left = end.timeIntervalSinceNow
            guard left > 0 else {
                print("\(heard - received) farm\(heard - received == 1 ? "" : "s") did not report within \(Int(timeout)) s; see their logs")
                throw ExitCode(1)
            }
            let r = try connection.command(["BLPOP", reply, String(format: "%.3f", min(left, 5))])
            guard let parts = r.array, parts.count == 2, let text = parts[1].string else { continue }
            received += 1
            guard let outcome = ReloadReply(json: text) else {
                print("unreadable reply: \(text)")
                ok = false
                continue
            }
            print("\(outcome.farm): \(outcome.status.rawValue): \(outcome.message)")
            if outcome.status != .done { ok = false }
        }
        _ = try? connection.command(["DEL", reply])
        if !ok { throw ExitCode(1) }
    }
}
