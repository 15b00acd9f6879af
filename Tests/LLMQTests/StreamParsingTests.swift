import LLMQ
import Testing

@Suite struct StreamParsingTests {
    func events(_ text: [UInt8], splits: [Int]) -> [String] {
        var parser = SSEParser()
        var out: [String] = []
        var start = 0
        for cut in splits + [text.count] where cut >= start {
            text[start..<cut].withUnsafeBufferPointer { b in
                _ = parser.feed(b) { e, d in
                    out.append(String(decoding: e, as: UTF8.self) + "|" + String(decoding: d, as: UTF8.self))
                    return true
                }
            }
            start = cut
        }
        _ = parser.finish { e, d in
            out.append(String(decoding: e, as: UTF8.self) + "|" + String(decoding: d, as: UTF8.self))
            return true
        }
        return out
    }

    @Test func sseEventsSurviveEverySplit() {
        let text = Array("event: message_start\r\ndata: {\"a\":\"é🙂\"}\r\n\r\n: keep-alive\n\ndata: line1\ndata: line2\n\ndata:no-space\r\rdata: [DONE]\n\n".utf8)
        let expected = ["message_start|{\"a\":\"é🙂\"}", "|line1\nline2", "|no-space", "|[DONE]"]
        #expect(events(text, splits: []) == expected)
        for cut in 0...text.count {
            #expect(events(text, splits: [cut]) == expected, "split at \(cut)")
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let cuts = (0..<5).map { _ in Int.random(in: 0...text.count, using: &rng) }.sorted()
            #expect(events(text, splits: cuts) == expected, "splits \(cuts)")
        }
    }

    @Test func scannerValidatesAndFinds() throws {
        let good = Array(#"{"choices":[{"index":0,"delta":{"content":"Hi \"there\"\n"},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#.utf8)
        try good.withUnsafeBufferPointer { b in
            let s = JSONScanner(b)
            let top = try #require(s.validate())
            let choices = try #require(s.member(top, "choices"))
            let first = try #require(s.element(choices, 0))
            let delta = try #require(s.member(first, "delta"))
            let content = try #require(s.member(delta, "content"))
            #expect(String(decoding: try #require(s.stringBody(content)), as: UTF8.self) == #"Hi \"there\"\n"#)
            #expect(s.string(content) == "Hi \"there\"\n")
            #expect(s.isNull(try #require(s.member(first, "finish_reason"))))
            #expect(s.member(top, "usage").flatMap { s.member($0, "completion_tokens") }.flatMap(s.int) == 2)
        }
        for bad in [#"{"a":}"#, #"{"a":"x"#, "{\"a\":\"\u{01}\"}", #"{"a":1,}"#, #"[1 2]"#, #"{"a":"\q"}"#, #"{"a":01x}"#] {
            Array(bad.utf8).withUnsafeBufferPointer { #expect(JSONScanner($0).validate() == nil, "accepted \(bad)") }
        }
        [UInt8]([0x22, 0xC3, 0x28, 0x22]).withUnsafeBufferPointer { #expect(JSONScanner($0).validate() == nil) }
    }

    @Test func openAIDecoderWritesEventsInAnySplit() throws {
        let stream = Array("""
            data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Dan"},"finish_reason":null}]}

            data: {"choices":[{"index":0,"delta":{"content":"ube ✓"},"finish_reason":null}]}

            data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

            data: {"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":2}}

            data: [DONE]


            """.utf8)
        for cut in stride(from: 0, through: stream.count, by: 3) {
            let writer = EventWriter(id: "r1")
            writer.beginAttempt(attempt: 1, worker: "w", provider: "p", model: "m", metadata: nil)
            let d = OpenAIStreamDecoder(writer: writer, provider: "p")
            stream[..<cut].withUnsafeBufferPointer { #expect(d.consume($0)) }
            stream[cut...].withUnsafeBufferPointer { #expect(d.consume($0)) }
            d.finish()
            #expect(d.complete && d.failure == nil)
            #expect(d.finishReason == "stop")
            #expect(d.usage == Usage(promptTokens: 19, completionTokens: 2))
            #expect(writer.text == "Danube ✓")
            var lines: [String] = []
            writer.takePending { p, _ in lines = String(decoding: p, as: UTF8.self).split(separator: "\n").map(String.init) }
            #expect(lines == [
                #"{"type":"start","id":"r1","seq":0,"attempt":1,"worker":"w","provider":"p","model":"m","metadata":{}}"#,
                #"{"type":"chunk","id":"r1","seq":1,"text":"Dan"}"#,
                #"{"type":"chunk","id":"r1","seq":2,"text":"ube ✓"}"#,
            ])
        }
    }

    @Test func malformedEventsAndEarlyEndsAreFailures() {
        let writer = EventWriter(id: "r2")
        let d = OpenAIStreamDecoder(writer: writer, provider: "p")
        Array("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {not json\n\n".utf8).withUnsafeBufferPointer {
            #expect(d.consume($0) == false)
        }
        #expect(d.failure?.code == .upstreamError)

        let w2 = EventWriter(id: "r3")
        let cut = OpenAIStreamDecoder(writer: w2, provider: "p")
        Array("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n".utf8).withUnsafeBufferPointer { _ = cut.consume($0) }
        cut.finish()
        #expect(!cut.complete)
        #expect(cut.failure?.message.contains("closed the stream") == true)
    }

    @Test func eventLinesEscapeWhatTheyWrite() throws {
        let w = EventWriter(id: "q:1")
        w.beginAttempt(attempt: 2, worker: "w\"1", provider: "p", model: "m\n", metadata: ["k": "v\u{1}"])
        w.chunk(text: "tab\there \"q\" \\ ✓")
        w.error(LLMQError(.timeout, "said \"no\"", retryable: true), attempt: 2)
        var lines: [String] = []
        w.takePending { p, starts in
            lines = String(decoding: p, as: UTF8.self).split(separator: "\n").map(String.init)
            #expect(starts.count == 3)
        }
        for l in lines {
            let v = try JSONValue.parse(Array(l.utf8))
            #expect(v["id"] == "q:1")
        }
        #expect(try JSONValue.parse(Array(lines[1].utf8))["text"] == "tab\there \"q\" \\ ✓")
        #expect(try JSONValue.parse(Array(lines[0].utf8))["metadata"] == ["k": "v\u{1}"])
        #expect(try JSONValue.parse(Array(lines[2].utf8))["retryable"] == true)
        #expect(try JSONValue.parse(Array(lines[2].utf8))["seq"] == 2)
    }

    @Test func retryAfterHeaders() {
        #expect(UpstreamError.retryAfter(["retry-after": "2"]) == 2)
        #expect(UpstreamError.retryAfter(["retry-after-ms": "1500"]) == 1.5)
        #expect(UpstreamError.retryAfter(["x-ratelimit-reset-requests": "1m30s"]) == 90)
        #expect(UpstreamError.retryAfter(["x-ratelimit-reset-tokens": "250ms"]) == 0.25)
        #expect(UpstreamError.retryAfter([:]) == nil)
    }
}
