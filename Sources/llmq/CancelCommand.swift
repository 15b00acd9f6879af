import ArgumentParser
import LLMQ

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a request, queued or running: SET its cancel key and wake the worker running it.")

    @OptionGroup var client: ClientOptions

    @Option(name: .long, help: "Seconds the cancel request stays valid for a job still queued.")
    var ttl: Int = 3600

    @Argument(help: "The request id.")
    var id: String

    func run() async throws {
        try Producer(url: try client.url, keys: client.keys).cancel(id: id, ttl: ttl)
        print("asked to cancel \(id)")
    }
}
