import Foundation
import LLMQ

/// One NDJSON event line as a subscriber received it.
public struct Event: Sendable, CustomStringConvertible {
    public let raw: String
    public let fields: [String: JSONValue]

    public init(_ raw: String) {
        self.raw = raw
        fields = (try? JSONValue.parse(Array(raw.utf8)))?.objectValue ?? [:]
    }

    public var type: String { fields["type"]?.stringValue ?? "?" }
    public var seq: Int? { fields["seq"]?.intValue }
    public var id: String { fields["id"]?.stringValue ?? "?" }
    public subscript(_ k: String) -> JSONValue? { fields[k] }
    public var isTerminal: Bool { type == "done" || type == "error" }
    public var description: String { raw }
}

/// Subscribes to every request channel under a prefix (PSUBSCRIBE) before
/// the test pushes anything, and records what arrives, per request.
public final class EventCollector: @unchecked Sendable {  // state guarded by `condition`
    private let condition = NSCondition()
    private var byID: [String: [Event]] = [:]
    private var payloads = 0
    private var partial = 0
    private var stopped = false
    private let client: PlainRedis

    public init(port: Int, prefix: String) throws {
        client = try PlainRedis(port: port)
        let r = try client.run("PSUBSCRIBE", "\(prefix):{*}:tokens")
        guard r.array?.first?.string == "psubscribe" else { throw TestFailure("PSUBSCRIBE failed: \(r)") }
        let t = Thread { [self] in self.loop() }
        t.start()
    }

    deinit { stop() }

    public func stop() {
        condition.lock()
        stopped = true
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            let done = stopped
            condition.unlock()
            if done { return }
            guard let reply = try? client.next(timeout: 0.2), let parts = reply.array, parts.count == 4,
                  let payload = parts[3].string else { continue }
            condition.lock()
            payloads += 1
            if !payload.hasSuffix("\n") { partial += 1 }
            for line in payload.split(separator: "\n", omittingEmptySubsequences: true) {
                let e = Event(String(line))
                byID[e.id, default: []].append(e)
            }
            condition.broadcast()
            condition.unlock()
        }
    }

    public func events(_ id: String) -> [Event] {
        condition.lock()
        defer { condition.unlock() }
        return byID[id] ?? []
    }

    public var allIDs: [String] {
        condition.lock()
        defer { condition.unlock() }
        return Array(byID.keys)
    }

    /// Payloads that did not end in a newline (the protocol allows none).
    public var partialPayloads: Int {
        condition.lock()
        defer { condition.unlock() }
        return partial
    }

    public var payloadCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return payloads
    }

    /// Waits until `predicate` holds over the recorded events, or fails with what was seen.
    @discardableResult
    public func wait(timeout: Double = 30, what: String, _ predicate: ([String: [Event]]) -> Bool) throws -> [String: [Event]] {
        let end = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !predicate(byID) {
            if !condition.wait(until: end) {
                let seen = byID.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.map(\.type).joined(separator: ","))" }
                throw TestFailure("timed out after \(timeout) s waiting for \(what); events seen:\n" + seen.joined(separator: "\n"))
            }
        }
        return byID
    }

    /// Waits for a terminal event of every id and returns each id's events.
    @discardableResult
    public func waitForTerminal(_ ids: [String], timeout: Double = 30) throws -> [String: [Event]] {
        try wait(timeout: timeout, what: "terminal events of \(ids.count) requests") { m in
            ids.allSatisfy { m[$0]?.contains(where: \.isTerminal) == true }
        }
    }
}
