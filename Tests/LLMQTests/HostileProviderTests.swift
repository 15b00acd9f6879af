import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// What a provider can make a worker hold or compute, without Redis: parser caps,
/// clamped numbers, retry hints, output counted with tool-call arguments.
@Suite struct HostileProviderLimitTests {
    /// Feeds `piece` until the parser stops, or `limit` bytes went in; returns the bytes fed.
    static func feedUntilStopped(_ piece: [UInt8], limit: Int, _ feed: (UnsafeBufferPointer<UInt8>) -> Bool) -> Int {
        var fed = 0
        while fed < limit {
            let ok = piece.withUnsafeBufferPointer { feed($0) }
            fed += piece.count
            if !ok { return fed }
        }
        return fed
    }

    @Test func anSSELineThatNeverEndsStopsTheParserAtItsCap() {
        var parser = SSEParser()
        var events = 0
        let opening = Array("data: {\"choices\":[{\"delta\":{\"content\":\"".utf8)
        #expect(opening.withUnsafeBufferPointer { b in parser.feed(b) { _, _ in events += 1; return true } })
        let fed = Self.feedUntilStopped([UInt8](repeating: UInt8(ascii: "a"), count: 16 << 10), limit: 8 << 20) { b in
            parser.feed(b) { _, _ in events += 1; return true }
        }
        #expect(parser.overflow == .line)
        #expect(fed <= SSEParser.defaultLimit + (16 << 10), "stopped after \(fed) bytes")
        #expect(events == 0)
        // Once stopped it stays stopped.
        #expect(!Array("\n\n".utf8).withUnsafeBufferPointer { b in parser.feed(b) { _, _ in true } })
    }

    @Test func anSSEEventOfEndlessDataLinesStopsTheParserAtItsCap() {
        var parser = SSEParser()
        let line = Array(("data: " + String(repeating: "x", count: 1000) + "\n").utf8)
        let fed = Self.feedUntilStopped(line, limit: 8 << 20) { b in parser.feed(b) { _, _ in Issue.record("no event ends"); return true } }
        #expect(parser.overflow == .event)
        // The cap counts data, not the `data: ` prefixes around it.
        #expect(fed <= SSEParser.defaultLimit * line.count / 1000 + 2 * line.count, "stopped after \(fed) bytes")
    }

    @Test func eventsUnderTheCapStillParse() {
        var parser = SSEParser(maxLineBytes: 4096, maxEventBytes: 8192)
        var got: [Int] = []
        let text = "data: " + String(repeating: "y", count: 4000) + "\ndata: " + String(repeating: "z", count: 4000) + "\n\n"
        #expect(Array(text.utf8).withUnsafeBufferPointer { b in parser.feed(b) { _, d in got.append(d.count); return true } })
        #expect(got == [8001] && parser.overflow == nil)
        var small = SSEParser(maxLineBytes: 4096, maxEventBytes: 4096)
        #expect(!Array(text.utf8).withUnsafeBufferPointer { b in small.feed(b) { _, _ in true } })
        #expect(small.overflow == .event)
    }

    @Test func anNDJSONLineThatNeverEndsStopsTheParserAtItsCap() {
        var parser = NDJSONParser()
        let fed = Self.feedUntilStopped([UInt8](repeating: UInt8(ascii: "b"), count: 16 << 10), limit: 8 << 20) { b in
            parser.feed(b) { _ in Issue.record("no line ends"); return true }
        }
        #expect(parser.overflowed)
        #expect(fed <= SSEParser.defaultLimit + (16 << 10))
        var lines = 0
        var ok = NDJSONParser(maxLineBytes: 64)
        #expect(Array("{\"a\":1}\n{\"b\":2}\n".utf8).withUnsafeBufferPointer { b in ok.feed(b) { _ in lines += 1; return true } })
        #expect(lines == 2)
    }

    @Test func decodersFailAnEndlessLineAsUpstreamError() {
        for kind in [ProviderKind.openai, .anthropic, .ollama] {
            let provider = Fixture.provider(kind)
            let writer = EventWriter(id: "h-1")
            writer.beginAttempt(attempt: 1, worker: "w", provider: provider.name, model: "m", metadata: nil)
            let d = provider.makeDecoder(job: Fixture.job(), writer: writer)
            let fed = Self.feedUntilStopped(Array("data: {\"x\":\"".utf8) + [UInt8](repeating: 0x61, count: 16 << 10), limit: 8 << 20) { d.consume($0) }
            #expect(fed < 2 << 20, "\(kind)")
            let f = d.failure
            #expect(f?.code == .upstreamError && f?.retryable == true, "\(kind): \(String(describing: f))")
            #expect(f?.message.contains("longer than 1 MiB") == true, "\(kind): \(f?.message ?? "")")
        }
    }

    @Test func retryHintsAreClampedToAFiniteRange() {
        #expect(UpstreamError.retryAfter(["retry-after": "99999999999"]) == UpstreamError.maxHint)
        #expect(UpstreamError.retryAfter(["retry-after": "1e400"]) == UpstreamError.maxHint)
        #expect(UpstreamError.retryAfter(["retry-after": "inf"]) == UpstreamError.maxHint)
        #expect(UpstreamError.retryAfter(["retry-after": "-5"]) == 0)
        #expect(UpstreamError.retryAfter(["retry-after": "nan"]) == nil)
        #expect(UpstreamError.retryAfter(["retry-after-ms": "nan"]) == nil)
        #expect(UpstreamError.retryAfter(["retry-after-ms": "nan", "retry-after": "2"]) == 2, "a NaN falls through to the next hint")
        #expect(UpstreamError.retryAfter(["retry-after-ms": "-inf"]) == 0)
        #expect(UpstreamError.retryAfter(["retry-after-ms": "1500"]) == 1.5)
        #expect(UpstreamError.retryAfter(["x-ratelimit-reset": "99999999999999h"]) == UpstreamError.maxHint)
        #expect(UpstreamError.retryAfter(["retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"]) == UpstreamError.maxHint)
        #expect(UpstreamError.clampHint(.nan) == nil && UpstreamError.clampHint(.infinity) == UpstreamError.maxHint)
        var r = HTTPResult()
        r.status = 429
        r.headers = ["retry-after": "99999999999"]
        let e = Fixture.provider(.openai).error(for: r)
        #expect(e.code == .rateLimited && e.retryAfter == UpstreamError.maxHint, "\(e)")
        let gemini = Fixture.provider(.gemini)
        r.headers = [:]
        r.errorBody = Array(#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"retryDelay":"99999999999999999999s"}]}}"#.utf8)
        #expect(gemini.error(for: r).retryAfter == UpstreamError.maxHint)
    }

    /// One OpenAI stream whose usage says `number` for both counts.
    static func openAIUsage(_ number: String) -> String {
        """
        data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}

        data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

        data: {"choices":[],"usage":{"prompt_tokens":\(number),"completion_tokens":\(number),"total_tokens":\(number)}}

        data: [DONE]


        """
    }

    @Test func tokenCountsFromProvidersAreClampedNotTrapped() {
        let cases: [(String, Int)] = [
            ("1e300", Usage.maxCount), ("-1", 0), ("18446744073709551616", Usage.maxCount), ("-9223372036854775808", 0),
            ("9223372036854775807", Usage.maxCount), ("1.5e3", 1500), ("-0", 0), ("7", 7),
        ]
        for (number, want) in cases {
            let r = Fixture.replay(Fixture.provider(.openai), Fixture.job(), Array(Self.openAIUsage(number).utf8), cuts: [])
            #expect(r.complete && r.failure == nil, "\(number): \(r)")
            #expect(r.usage == Usage(promptTokens: want, completionTokens: want), "\(number): \(r.usage)")
        }
        // Sums saturate: Anthropic adds cache tokens to input tokens, Gemini thinking to candidates.
        #expect(Usage.sum(Usage.maxCount, Usage.maxCount, 5) == Usage.maxCount)
        #expect(Usage.sum(Int.max, Int.max) == Usage.maxCount)
        #expect(Usage.sum(nil, nil) == nil && Usage.sum(-4, 3) == 3)
        let anthropic = """
            event: message_start
            data: {"type":"message_start","message":{"usage":{"input_tokens":1e300,"cache_read_input_tokens":9223372036854775807,"output_tokens":1}}}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":-9223372036854775808}}

            event: message_stop
            data: {"type":"message_stop"}


            """
        let a = Fixture.replay(Fixture.provider(.anthropic), Fixture.job(), Array(anthropic.utf8), cuts: [])
        #expect(a.complete && a.usage == Usage(promptTokens: Usage.maxCount, completionTokens: 0), "\(a)")
    }

    @Test func toolCallIndexesOutOfRangeFailTheStream() {
        for index in ["-1", "1e300", "18446744073709551616", "0.5", "1024"] {
            let stream = """
                data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":\(index),"id":"c","type":"function","function":{"name":"f","arguments":""}}]}}]}

                data: [DONE]


                """
            let r = Fixture.replay(Fixture.provider(.openai), Fixture.job(), Array(stream.utf8), cuts: [])
            #expect(r.failure?.hasPrefix("upstream_error") == true && r.failure?.contains("index \(index)") == true, "\(index): \(r)")
            #expect(!r.complete)
        }
        let ok = """
            data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}

            data: [DONE]


            """
        let r = Fixture.replay(Fixture.provider(.openai), Fixture.job(), Array(ok.utf8), cuts: [])
        #expect(r.complete && r.toolCalls.first?["index"] == 3, "\(r)")
    }

    @Test func embeddingIndexesMustNameAnInput() {
        let job = Fixture.job("embed")  // two inputs
        for index in ["-1", "2", "1e300", "18446744073709551616"] {
            let body = #"{"data":[{"index":\#(index),"embedding":[0.1]}],"usage":{"prompt_tokens":1e300}}"#
            let r = Fixture.replay(Fixture.provider(.openai), job, Array(body.utf8), cuts: [])
            #expect(r.failure?.hasPrefix("upstream_error") == true && !r.complete, "\(index): \(r)")
        }
        let good = #"{"data":[{"index":1,"embedding":[0.1]},{"index":0,"embedding":[0.2]}],"usage":{"prompt_tokens":1e300}}"#
        let r = Fixture.replay(Fixture.provider(.openai), job, Array(good.utf8), cuts: [])
        #expect(r.complete && r.usage.promptTokens == Usage.maxCount, "\(r)")
        let tooMany = #"{"embeddings":[[0.1],[0.2],[0.3]],"prompt_eval_count":-1}"#
        let o = Fixture.replay(Fixture.provider(.ollama), job, Array(tooMany.utf8), cuts: [])
        #expect(o.failure?.contains("3 embeddings for 2 inputs") == true, "\(o)")
    }

    @Test func maxOutputBytesCountsToolCallArguments() {
        let w = EventWriter(id: "o-1", maxOutputBytes: 1000)
        w.beginAttempt(attempt: 1, worker: "w", provider: "p", model: "m", metadata: nil)
        let piece = [UInt8](repeating: UInt8(ascii: "a"), count: 300)
        for i in 0..<3 {
            piece.withUnsafeBufferPointer { w.toolCall(index: 0, callID: i == 0 ? "c" : nil, name: i == 0 ? "f" : nil, argumentsEscaped: $0) }
        }
        #expect(!w.exceeded, "\(w.outputBytes)")
        piece.withUnsafeBufferPointer { w.toolCall(index: 0, callID: nil, name: nil, argumentsEscaped: $0) }
        #expect(w.exceeded && w.outputBytes == 1202, "\(w.outputBytes)")
        #expect(w.toolCalls.count == 1 && w.toolCalls[0].argumentsEscaped.count == 1200)
        // Many empty tool calls are capped by count.
        let many = EventWriter(id: "o-2")
        many.beginAttempt(attempt: 1, worker: "w", provider: "p", model: "m", metadata: nil)
        for i in 0...EventWriter.maxToolCalls { many.toolCall(index: i, callID: nil, name: nil, argumentsEscaped: UnsafeBufferPointer(start: nil, count: 0)) }
        #expect(many.exceeded)
        // A new attempt starts the count again.
        many.beginAttempt(attempt: 2, worker: "w", provider: "p", model: "m", metadata: nil)
        #expect(!many.exceeded && many.outputBytes == 0)
    }

    @Test func transportFailuresSayWhoseFaultTheyAre() {
        var r = HTTPResult()
        r.transportFailure = .localResource
        r.curlMessage = "Could not connect to server"
        let local = Fixture.provider(.openai).error(for: r)
        #expect(local.code == .internal && local.retryable && local.message.contains("ulimit"), "\(local)")
        r.transportFailure = .timedOut
        #expect(Fixture.provider(.openai).error(for: r).code == .timeout)
        r.transportFailure = .other
        #expect(Fixture.provider(.openai).error(for: r).code == .upstreamError)
        r.transportFailure = nil
        r.aborted = .compressedBody
        r.headers = ["content-encoding": "gzip"]
        let gz = Fixture.provider(.openai).error(for: r)
        #expect(gz.code == .upstreamError && gz.message.contains("Content-Encoding: gzip"), "\(gz)")
    }
}

/// A loopback server that answers one connection with canned bytes, for what the sim cannot
/// send (endless headers). It answers on its own thread and closes after writing.
final class CannedServer: @unchecked Sendable {  // fd and port are set before the thread starts, then only read
    let port: Int
    private let fd: Int32

    init(response: [UInt8]) throws {
        let (listener, port) = try LoopbackListener.open(backlog: 4)
        fd = listener
        self.port = port
        Thread {
            let c = accept(listener, nil, nil)
            guard c >= 0 else { return }
            var buf = [UInt8](repeating: 0, count: 65536)
            _ = read(c, &buf, buf.count)  // the request; its content does not matter
            var sent = 0
            while sent < response.count {
                let n = response[sent...].withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                sent += n
            }
            close(c)
        }.start()
    }

    deinit { close(fd) }
}

@Suite struct HostileHTTPTests {
    @Test func endlessResponseHeadersAreCut() throws {
        var response = Array("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n".utf8)
        for i in 0..<20_000 { response += Array("X-Pad-\(i): \(String(repeating: "h", count: 40))\r\n".utf8) }
        response += Array("\r\ndata: [DONE]\n\n".utf8)
        let server = try CannedServer(response: response)
        let r = BlockingHTTPClient().perform(HTTPRequest(url: "http://127.0.0.1:\(server.port)/", body: Array("{}".utf8), timeout: 10))
        #expect(r.aborted == .headerLimit, "\(r)")
        #expect(r.headers.count < 20_000)
        let e = Fixture.provider(.openai).error(for: r)
        #expect(e.code == .upstreamError && e.message.contains("KiB of response headers"), "\(e)")
    }

    @Test func aCompressedBodyIsRefusedAtItsFirstByte() throws {
        let gz: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff] + [UInt8](repeating: 0, count: 4096)
        let response = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: \(gz.count)\r\n\r\n".utf8) + gz
        let server = try CannedServer(response: response)
        final class Count: StreamDecoder {
            var bytes = 0
            func consume(_ b: UnsafeBufferPointer<UInt8>) -> Bool { bytes += b.count; return true }
            func finish() {}
        }
        let seen = Count()
        let r = BlockingHTTPClient().perform(HTTPRequest(url: "http://127.0.0.1:\(server.port)/", body: Array("{}".utf8), timeout: 10), decoder: seen)
        #expect(r.aborted == .compressedBody && seen.bytes == 0, "\(r)")
        #expect(r.transportFailure == nil, "an abort by llmq is not a transport failure")
    }

    @Test func aRefusedConnectionIsUnreachable() throws {
        let port = try FreePort.find()
        let r = BlockingHTTPClient().perform(HTTPRequest(url: "http://127.0.0.1:\(port)/", timeout: 5, connectTimeout: 2))
        #expect(r.transportFailure == .unreachable && !r.completed, "\(r)")
    }
}

/// Hostile upstreams served by `llmq sim` to a live farm (redis-server, `llmq farm` with two
/// workers): every job ends with a clear terminal event, and no worker dies.
@Suite(.serialized) struct HostileProviderFarmTests {
    static let tools = #"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#

    /// One hostile job: its id, mode, model, and what its terminal event must say.
    struct Case {
        var id: String
        var mode = "chat"
        var model: String
        var tools = false
        /// `done`, or an error code.
        var ends: String
        /// Words the error message must hold.
        var says: String = ""
        /// The usage `done` must report (clamped).
        var usage: Int?
    }

    static let cases: [Case] = {
        let max = Usage.maxCount
        var c: [Case] = [
            Case(id: "ok", model: "hsim/sim:tokens=3", ends: "done"),
            Case(id: "usage-1e300", model: "hsim/sim:tokens=3,fault=bad_usage,number=1e300", ends: "done", usage: max),
            Case(id: "usage-neg", model: "hsim/sim:tokens=3,fault=bad_usage,number=-1", ends: "done", usage: 0),
            Case(id: "usage-2p64", model: "hsim/sim:tokens=3,fault=bad_usage,number=2^64", ends: "done", usage: max),
            Case(id: "usage-gemini", model: "gemini/sim:tokens=3,fault=bad_usage,number=-2^63", ends: "done", usage: 0),
            Case(id: "usage-anthropic", model: "anthropic/sim:tokens=3,fault=bad_usage,number=1e300", ends: "done", usage: max),
            Case(id: "usage-ollama", model: "ollama/sim:tokens=3,fault=bad_usage,number=2^63", ends: "done", usage: max),
            Case(id: "index-openai", model: "hsim/sim:tool=get_weather,fault=bad_index,number=-1", tools: true, ends: "upstream_error", says: "index -1"),
            Case(id: "index-anthropic", model: "anthropic/sim:tool=get_weather,fault=bad_index,number=1e300", tools: true, ends: "upstream_error", says: "index 1e300"),
            Case(id: "index-cohere", model: "cohere/sim:tool=get_weather,fault=bad_index,number=2^64", tools: true, ends: "upstream_error", says: "index"),
            Case(id: "index-embed", mode: "embed", model: "hsim/sim:fault=bad_index,number=2^64", ends: "upstream_error", says: "embedding index"),
            Case(id: "line-openai", model: "hsim/sim:fault=endless_line", ends: "upstream_error", says: "SSE line longer than 1 MiB"),
            Case(id: "line-ollama", model: "ollama/sim:fault=endless_line", ends: "upstream_error", says: "NDJSON line longer than 1 MiB"),
            Case(id: "line-gemini", model: "gemini/sim:fault=endless_line", ends: "upstream_error", says: "SSE line longer than 1 MiB"),
            Case(id: "data-openai", model: "hsim/sim:fault=endless_data", ends: "upstream_error", says: "data ran past 1 MiB"),
            Case(id: "data-anthropic", model: "anthropic/sim:fault=endless_data", ends: "upstream_error", says: "data ran past 1 MiB"),
            Case(id: "args-openai", model: "hsim/sim:tool=get_weather,fault=endless_args", tools: true, ends: "upstream_error", says: "max_output_bytes"),
            Case(id: "args-cohere", model: "cohere/sim:tool=get_weather,fault=endless_args", tools: true, ends: "upstream_error", says: "max_output_bytes"),
            Case(id: "args-gemini", model: "gemini/sim:tool=get_weather,fault=endless_args", tools: true, ends: "upstream_error", says: "tool calls"),
            Case(id: "text-endless", model: "hsim/sim:fault=endless_args", ends: "upstream_error", says: "max_output_bytes"),
            Case(id: "gzip-openai", model: "hsim/sim:fault=gzip_bomb", ends: "upstream_error", says: "Content-Encoding: gzip"),
            Case(id: "gzip-anthropic", model: "anthropic/sim:fault=gzip_bomb", ends: "upstream_error", says: "compressed body"),
            Case(id: "gzip-embed", mode: "embed", model: "hsim/sim:fault=gzip_bomb", ends: "upstream_error", says: "compressed body"),
            Case(id: "truncated", model: "hsim/sim:tokens=5,fault=truncate", ends: "upstream_error", says: "closed the stream"),
            Case(id: "gemini-hint", model: "gemini/sim:fault=429,retry_hint=99999999999", ends: "rate_limited", says: "429"),
        ]
        for (i, hint) in ["99999999999", "nan", "inf", "-5", "1e400", "-inf"].enumerated() {
            c.append(Case(id: "hint-\(i)", model: "hsim/sim:fault=429,retry_hint=\(hint)", ends: "rate_limited", says: "429"))
        }
        return c
    }()

    static func job(_ c: Case) -> String {
        let tail = #","max_attempts":1"# + (c.tools ? #","params":{"tools":\#(tools),"tool_choice":"required"}"# : "")
        if c.mode == "embed" { return #"{"id":"\#(c.id)","model":"\#(c.model)","input":["alpha","beta"]\#(tail)}"# }
        return TestEnvironment.chatJob(id: c.id, model: c.model, extra: tail)
    }

    @Test func everyHostileStreamEndsWithAClearEventAndNoWorkerDies() async throws {
        let env = try TestEnvironment("hostile-providers")
        let sim = "http://127.0.0.1:\(env.simPort)"
        // Generous timeouts: on a loaded machine a debug sim pumping floods can be slow to
        // answer, and a timeout here would hide the error each case is about.
        let quiet = "timeout_s: 90, idle_timeout_s: 30, cooldown_s: 0, failures_before_cooldown: 0"
        let config = try env.writeConfig(workers: 2, extra: """
              hsim: {kind: sim, base_url: "\(sim)/v1", \(quiet)}
              ollama: {kind: ollama, base_url: "\(sim)", \(quiet)}
              anthropic: {kind: anthropic, base_url: "\(sim)", \(quiet)}
              gemini: {kind: gemini, base_url: "\(sim)/v1beta", \(quiet)}
              cohere: {kind: cohere, base_url: "\(sim)", \(quiet)}
            max_output_bytes: 65536

            """)
        let events = try env.collector()
        let farm = try env.start(["farm", "--config", config])
        try env.until("two workers", timeout: 30) { TestEnvironment.children(of: farm.pid).count == 2 }
        let before = Set(TestEnvironment.children(of: farm.pid))
        let redis = try env.client()
        for c in Self.cases { try redis.run("LPUSH", env.key("{\(c.mode)}:queue"), Self.job(c)) }
        let all = try events.waitForTerminal(Self.cases.map(\.id), timeout: 240)
        for c in Self.cases {
            let evs = all[c.id] ?? []
            let terminals = evs.filter(\.isTerminal)
            #expect(terminals.count == 1, "\(c.id): one terminal event: \(evs)")
            guard let end = terminals.first else { continue }
            if c.ends == "done" {
                #expect(end.type == "done", "\(c.id): \(end.raw)")
                if let u = c.usage {
                    #expect(end["usage"]?["prompt_tokens"]?.intValue == u && end["usage"]?["completion_tokens"]?.intValue == u, "\(c.id): \(end.raw)")
                }
            } else {
                #expect(end.type == "error" && end["code"]?.stringValue == c.ends, "\(c.id): \(end.raw)")
                #expect(end["message"]?.stringValue?.contains(c.says) == true, "\(c.id) should say \"\(c.says)\": \(end.raw)")
            }
            let seqs = evs.compactMap(\.seq)
            #expect(seqs == Array(0..<seqs.count), "\(c.id): gapless seq: \(seqs)")
        }
        // The endless cases wrote thousands of chunks; their first lines and their ends are what is new here.
        try SchemaCheck.validate("event", Self.cases.flatMap { c in (all[c.id] ?? []).prefix(20) + (all[c.id] ?? []).filter(\.isTerminal) }.map(\.raw))
        let after = Set(TestEnvironment.children(of: farm.pid))
        #expect(after == before, "no worker died: pids before \(before.sorted()), after \(after.sorted())")
        #expect(!env.log().contains("died ("), "the supervisor saw a worker die:\n\(env.log())")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log())")
    }

    /// Keeps a response body, for requests sent with `BlockingHTTPClient`.
    final class Body: StreamDecoder {
        var bytes: [UInt8] = []
        func consume(_ b: UnsafeBufferPointer<UInt8>) -> Bool { bytes.append(contentsOf: b); return true }
        func finish() {}
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    /// The sim's upstream storm, per request and seeded, in the four formats the lead's
    /// storm scenario uses: each fault comes at about its chance.
    @Test func theSimStormsWithSeededChancesInEveryFormat() throws {
        let env = try TestEnvironment("sim-storm")
        let sim = "http://127.0.0.1:\(env.simPort)"
        let chances = ["429": 0.15, "503": 0.10, "cut": 0.05, "truncated": 0.05, "malformed": 0.05]
        let knobs = "tokens=3,fault_429=0.15,fault_503=0.10,cut=0.05,truncate=0.05,malformed=0.05,retry_after=0,seed=7"
        let messages = #"[{"role":"user","content":"hi"}]"#
        let formats: [(name: String, path: (String) -> String, body: (String) -> String, headers: [String], end: String)] = [
            ("openai", { _ in "/v1/chat/completions" }, { #"{"model":"sim:\#($0)","stream":true,"messages":\#(messages)}"# }, [], "[DONE]"),
            ("anthropic", { _ in "/v1/messages" }, { #"{"model":"sim:\#($0)","max_tokens":10,"stream":true,"messages":\#(messages)}"# },
             ["anthropic-version: 2023-06-01"], "message_stop"),
            ("gemini", { "/v1beta/models/sim:\($0):streamGenerateContent?alt=sse" }, { _ in #"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"# }, [], "finishReason"),
            ("cohere", { _ in "/v2/chat" }, { #"{"model":"sim:\#($0)","stream":true,"messages":\#(messages)}"# }, [], "message-end"),
        ]
        let client = BlockingHTTPClient()
        let n = 200
        for f in formats {
            var seen: [String: Int] = [:]
            let k = knobs + ",key=storm-\(f.name)"
            for _ in 0..<n {
                let body = Body()
                let r = client.perform(
                    HTTPRequest(url: sim + f.path(k), headers: ["Content-Type: application/json"] + f.headers, body: Array(f.body(k).utf8), timeout: 10),
                    decoder: body)
                let outcome: String
                if r.status == 429 || r.status == 503 { outcome = String(r.status) }
                else if r.transportFailure != nil { outcome = "cut" }
                else if r.status != 200 { outcome = "HTTP \(r.status): \(body.text.prefix(200))" }
                else if body.text.contains("not json") { outcome = "malformed" }
                else if !body.text.contains(f.end) { outcome = "truncated" }
                else { outcome = "ok" }
                seen[outcome, default: 0] += 1
            }
            for (fault, p) in chances {
                let got = seen[fault] ?? 0
                let expected = Double(n) * p
                let slack = max(4 * (expected * (1 - p)).squareRoot(), 3)
                #expect(got > 0 && abs(Double(got) - expected) <= slack, "\(f.name): \(fault) \(got) of \(n), expected about \(expected): \(seen)")
            }
            #expect(seen.keys.allSatisfy { chances[$0] != nil || $0 == "ok" }, "\(f.name): \(seen)")
        }
    }
}
