import ArgumentParser
import LLMQ

struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Replay a request's events from its log and follow them to the end.")

    @OptionGroup var client: ClientOptions

    @Flag(name: .long, help: "Print the raw NDJSON event lines.")
    var json = false

    @Flag(name: .customLong("no-follow"), help: "Print what the log holds now and exit.")
    var noFollow = false

    @Argument(help: "The request id.")
    var id: String

    func run() async throws {
        let lines = try RequestWatcher.tail(url: try client.url, keys: client.keys, id: id, follow: !noFollow)
        let ok = await EventPrinter(json: json).print(lines)
        if !ok { throw ExitCode(1) }
    }
}
