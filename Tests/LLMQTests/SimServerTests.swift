import Foundation
import LLMQSim
import Logging
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite struct SimServerTests {
    @Test func streamsChatTokensThenFinishUsageAndDone() async throws {
        try await withSim { sim in
            let (data, response) = try await sim.post(
                "/v1/chat/completions",
                [
                    "model": "sim:tokens=4", "stream": true, "stream_options": ["include_usage": true],
                    "messages": [["role": "user", "content": "say four words"]],
                ])
            #expect(response.statusCode == 200)
            #expect(response.value(forHTTPHeaderField: "Content-Type") == "text/event-stream")

            let events = String(decoding: data, as: UTF8.self).components(separatedBy: "\n\n").filter { !$0.isEmpty }
            #expect(events.allSatisfy { $0.hasPrefix("data: ") }, "events: \(events)")
            #expect(events.last == "data: [DONE]")
            let chunks = try events.dropLast().map { try json($0.dropFirst("data: ".count)) }
            let deltas = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first)?["delta"] as? [String: Any] }
            let contents = deltas.compactMap { $0["content"] as? String }
            #expect(contents.count == 4, "chunks: \(chunks)")
            #expect(deltas.first?["role"] as? String == "assistant")
            #expect(contents.joined().split(separator: " ").count == 4)

            let finishes = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first)?["finish_reason"] as? String }
            #expect(finishes == ["stop"])
            let usage = try #require(chunks.last?["usage"] as? [String: Any])
            #expect(usage["prompt_tokens"] as? Int == 3)
            #expect(usage["completion_tokens"] as? Int == 4)
            #expect(usage["total_tokens"] as? Int == 7)
        }
    }

    @Test func rateLimitFaultAnswers429WithRetryAfter() async throws {
        try await withSim { sim in
            let (data, response) = try await sim.post(
                "/v1/chat/completions", ["model": "gpt-4o-mini:fault=429,retry_after=2", "messages": []])
            #expect(response.statusCode == 429)
            #expect(response.value(forHTTPHeaderField: "Retry-After") == "2")
            let error = try #require(try json(data)["error"] as? [String: Any])
            #expect(error["code"] as? String == "rate_limit_exceeded")
        }
    }

    @Test func failTimesFailsThenSucceeds() async throws {
        try await withSim { sim in
            let body: [String: Any] = ["model": "sim-1", "messages": []]
            let header = ["X-Sim": "tokens=2,fault=500,fail_times=1,key=once"]
            let (_, first) = try await sim.post("/v1/chat/completions", body, headers: header)
            let (data, second) = try await sim.post("/v1/chat/completions", body, headers: header)
            #expect(first.statusCode == 500)
            #expect(second.statusCode == 200)
            let choice = try #require((try json(data)["choices"] as? [[String: Any]])?.first)
            #expect(choice["finish_reason"] as? String == "stop")
        }
    }

    @Test func unknownKnobIsRejectedByName() async throws {
        try await withSim { sim in
            let (data, response) = try await sim.post("/v1/chat/completions", ["model": "sim:tokenz=3", "messages": []])
            #expect(response.statusCode == 400)
            #expect(String(decoding: data, as: UTF8.self).contains("tokenz"))
        }
    }

    @Test func embeddingsHaveRequestedDimensionsAndRepeat() async throws {
        try await withSim { sim in
            let body: [String: Any] = ["model": "sim:dim=5", "input": ["hello world", "other text"]]
            let (data, response) = try await sim.post("/v1/embeddings", body)
            let (again, _) = try await sim.post("/v1/embeddings", body)
            #expect(response.statusCode == 200)
            let vectors = try #require(try json(data)["data"] as? [[String: Any]]).compactMap { $0["embedding"] as? [Double] }
            #expect(vectors.count == 2)
            #expect(vectors.allSatisfy { $0.count == 5 })
            #expect(vectors[0] != vectors[1])
            #expect(data == again)
        }
    }

    @Test func clientLeavingAStalledStreamCountsAsAborted() async throws {
        try await withSim { sim in
            let stalled = Task {
                try await sim.post("/v1/chat/completions", ["model": "sim:fault=stall", "stream": true, "messages": []])
            }
            _ = try await sim.waitForStats { $0["active"] == 1 }
            stalled.cancel()
            if case .success = await stalled.result {
                Issue.record("a stalled stream should not complete")
            }
            let stats = try await sim.waitForStats { $0["aborted"] == 1 && $0["active"] == 0 }
            #expect(stats["requests"] == 1)
        }
    }

    @Test func cancellingRunCutsOpenStreamsAndReturns() async throws {
        let (sim, server) = try await startSim()
        let stalled = Task {
            try await sim.post("/v1/chat/completions", ["model": "sim:fault=stall", "stream": true, "messages": []])
        }
        _ = try await sim.waitForStats { $0["active"] == 1 }
        server.cancel()
        try await server.value
        if case .success = await stalled.result {
            Issue.record("a stream cut by shutdown should not complete")
        }
    }
}

/// A sim running on a free port for the length of one test, with a client for it.
private struct SimClient {
    let base: URL
    let session = URLSession(configuration: .ephemeral)

    func post(
        _ path: String,
        _ body: [String: Any],
        headers: [String: String] = [:]
    ) async throws -> (Data, HTTPURLResponse) {
        var request = URLRequest(url: self.base.appendingPathComponent(path))
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        for (name, value) in headers {
            request.setValue(value, forHTTPHeaderField: name)
        }
        request.httpBody = try JSONSerialization.data(withJSONObject: body)
        let (data, response) = try await self.session.data(for: request)
        return (data, try #require(response as? HTTPURLResponse))
    }

    /// Polls `/sim/stats` until `done` holds, failing after a deadline.
    func waitForStats(_ done: ([String: Int]) -> Bool) async throws -> [String: Int] {
        let deadline = ContinuousClock.now + .seconds(30)
        var stats: [String: Int] = [:]
        while ContinuousClock.now < deadline {
            let (data, _) = try await self.session.data(from: self.base.appendingPathComponent("/sim/stats"))
            stats = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Int])
            if done(stats) { return stats }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("stats never reached the expected state; last seen: \(stats)")
        return stats
    }
}

private struct SimDidNotStart: Error {}

/// Starts a sim on a free port; cancelling the returned task stops it.
private func startSim() async throws -> (SimClient, Task<Void, any Error>) {
    var logger = Logger(label: "llmq.sim.test")
    logger.logLevel = .warning
    let (ports, ready) = AsyncStream<Int>.makeStream()
    let server = Task { [logger] in
        defer { ready.finish() }
        try await SimServer(port: 0, logger: logger).run { port in ready.yield(port) }
    }
    var readiness = ports.makeAsyncIterator()
    guard let port = await readiness.next() else {
        try await server.value
        throw SimDidNotStart()
    }
    return (SimClient(base: URL(string: "http://127.0.0.1:\(port)")!), server)
}

private func withSim(_ body: (SimClient) async throws -> Void) async throws {
    let (client, server) = try await startSim()
    do {
        try await body(client)
    } catch {
        server.cancel()
        _ = await server.result
        throw error
    }
    server.cancel()
    try await server.value
}

private func json(_ text: some StringProtocol) throws -> [String: Any] {
    try json(Data(text.utf8))
}

private func json(_ data: Data) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}
