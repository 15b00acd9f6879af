import ArgumentParser
import Foundation
import LLMQ

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Push a job and print its tokens as they arrive (subscribes first, so nothing is missed).")

    @OptionGroup var client: ClientOptions

    @Option(name: .long, help: "A route name or PROVIDER/MODEL.")
    var model: String

    @Option(name: .long, help: "chat, complete or embed.")
    var mode: Mode = .chat

    @Option(name: .long, help: "Request id (default: a new random one).")
    var id: String?

    @Option(name: .long, help: "System prompt for chat jobs.")
    var system: String?

    @Option(name: .customLong("max-tokens"), help: "params.max_tokens")
    var maxTokens: Int?

    @Option(name: .long, help: "timeout_s of the job.")
    var timeout: Double?

    @Option(name: .long, help: "tenant of the job (limits, fair share and metrics on `schedule: fair` modes).")
    var tenant: String?

    @Option(name: .long, help: "priority of the job: high, normal or low.")
    var priority: String?

    @Option(name: .long, help: "metadata, a JSON object.")
    var metadata: String?

    @Flag(name: .long, help: "Print the raw NDJSON event lines.")
    var json = false

    @Flag(name: .customLong("no-wait"), help: "Push and exit without waiting for the answer.")
    var noWait = false

    @Argument(help: "The prompt (chat: the user message; embed: the input).")
    var prompt: String

    func run() async throws {
        let url = try client.url
        let keys = client.keys
        let requestID = id ?? "req-\(UUID().uuidString.prefix(8).lowercased())"
        var job: [String: JSONValue] = ["id": .string(requestID), "model": .string(model)]
        switch mode {
        case .complete: job["prompt"] = .string(prompt)
        case .embed: job["input"] = .string(prompt)
        default:
            var messages: [JSONValue] = []
            if let system { messages.append(["role": "system", "content": .string(system)]) }
            messages.append(["role": "user", "content": .string(prompt)])
            job["messages"] = .array(messages)
        }
        if let maxTokens { job["params"] = ["max_tokens": .int(maxTokens)] }
        if let timeout { job["timeout_s"] = .double(timeout) }
        if let tenant {
            guard Job.isValidTenant(tenant) else { throw ValidationError("--tenant must be 1-64 characters of A-Z a-z 0-9 . _ : -") }
            job["tenant"] = .string(tenant)
        }
        if let priority {
            guard ["high", "normal", "low"].contains(priority) else { throw ValidationError("--priority must be high, normal or low") }
            job["priority"] = .string(priority)
        }
        if let metadata {
            guard let m = try? JSONValue.parse(Array(metadata.utf8)), m.objectValue != nil else {
                throw ValidationError("--metadata must be a JSON object, such as '{\"tenant\":\"acme\"}'")
            }
            job["metadata"] = m
        }
        let events = noWait ? nil : try RequestWatcher.subscribe(url: url, keys: keys, id: requestID)
        try Producer(url: url, keys: keys).push(.object(job), mode: mode)
        guard let events else {
            print(requestID)
            return
        }
        let ok = await EventPrinter(json: json).print(events)
        if !ok { throw ExitCode(1) }
    }
}

/// Prints event lines for a person: chunk text inline, other events as short notes on stderr.
struct EventPrinter {
    var json: Bool

    /// Returns whether the request ended in `done`.
    func print(_ lines: AsyncStream<String>) async -> Bool {
        var ok = false
        for await line in lines {
            guard let event = try? JSONValue.parse(Array(line.utf8)) else { continue }
            let type = event["type"]?.stringValue ?? ""
            if type == "done" { ok = true }
            if json {
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
                continue
            }
            switch type {
            case "chunk":
                FileHandle.standardOutput.write(Data((event["text"]?.stringValue ?? "").utf8))
            case "start":
                note("[\(event["id"]?.stringValue ?? "") attempt \(event["attempt"]?.intValue ?? 0) on \(event["worker"]?.stringValue ?? "?") via \(event["provider"]?.stringValue ?? "?")/\(event["model"]?.stringValue ?? "?")]")
            case "tool_call":
                FileHandle.standardOutput.write(Data((event["arguments"]?.stringValue ?? "").utf8))
            case "embedding":
                note("[embedding \(event["index"]?.intValue ?? 0): \(event["vector"]?.arrayValue?.count ?? 0) dimensions]")
            case "retry":
                note("\n[retry: attempt \(event["attempt"]?.intValue ?? 0), \(event["reason"]?.stringValue ?? "")]")
            case "done":
                let u = event["usage"]
                note("\n[done: \(event["finish_reason"]?.stringValue ?? "?"), \(u?["prompt_tokens"]?.intValue ?? 0) prompt + \(u?["completion_tokens"]?.intValue ?? 0) completion tokens, first token \(event["ttft_ms"]?.doubleValue ?? 0) ms, total \(event["duration_ms"]?.doubleValue ?? 0) ms]")
            case "error":
                note("\n[error \(event["code"]?.stringValue ?? "?"): \(event["message"]?.stringValue ?? "")]")
            default: break
            }
        }
        return ok
    }

    private func note(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }
}
