import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// What a decoder made of one transcript.
struct Replay: Equatable, CustomStringConvertible {
    var lines: [String]
    var finishReason: String?
    var usage: Usage
    var failure: String?
    var complete: Bool

    var events: [JSONValue] { lines.compactMap { try? JSONValue.parse(Array($0.utf8)) } }
    var text: String { events.filter { $0["type"] == "chunk" }.compactMap { $0["text"]?.stringValue }.joined() }
    var toolCalls: [JSONValue] { events.filter { $0["type"] == "tool_call" } }
    /// The arguments of tool call `index`, its pieces joined and parsed.
    func arguments(_ index: Int) -> JSONValue? {
        let text = toolCalls.filter { $0["index"]?.intValue == index }.compactMap { $0["arguments"]?.stringValue }.joined()
        return try? JSONValue.parse(Array(text.utf8))
    }
    var description: String { "lines: \(lines)\nfinish: \(finishReason ?? "-") usage: \(usage) failure: \(failure ?? "-") complete: \(complete)" }
}

enum Fixture {
    static func job(_ mode: Mode = "chat", _ json: String = "") -> Job {
        let body: String
        switch mode {
        case "complete": body = #""prompt":"Say hi""#
        case "embed": body = #""input":["a","b"]"#
        default: body = #""messages":[{"role":"user","content":"Say hi"}]"#
        }
        let raw = #"{"id":"fx-1","model":"m",\#(body)\#(json.isEmpty ? "" : ",")\#(json)}"#
        return try! JobParser().parse(Array(raw.utf8), mode: mode)
    }

    static func provider(_ kind: ProviderKind, key: String? = "sk-test", _ configure: (inout ProviderConfig) -> Void = { _ in }) -> any Provider {
        var c = ProviderConfig(kind: kind.rawValue)
        configure(&c)
        return ProviderRegistry.make(kind, name: kind.rawValue, config: c, apiKey: key)
    }

    /// Feeds `bytes` cut at `cuts`, as libcurl would hand them over, and collects the result.
    static func replay(_ provider: any Provider, _ job: Job, _ bytes: [UInt8], cuts: [Int]) -> Replay {
        let writer = EventWriter(id: "fx-1")
        writer.beginAttempt(attempt: 1, worker: "w", provider: provider.name, model: "m", metadata: nil)
        let d = provider.makeDecoder(job: job, writer: writer)
        var start = 0
        var aborted = false
        for cut in cuts + [bytes.count] where cut >= start && !aborted {
            bytes[start..<cut].withUnsafeBufferPointer { b in
                if !b.isEmpty && !d.consume(b) { aborted = true }
            }
            start = cut
        }
        // The engine calls finish only when the body ended normally.
        if !aborted { d.finish() }
        var lines: [String] = []
        writer.takePending { p, _ in lines = String(decoding: p, as: UTF8.self).split(separator: "\n").map(String.init) }
        return Replay(lines: lines, finishReason: d.finishReason, usage: d.usage,
                      failure: d.failure.map { "\($0.code): \($0.message) retryable=\($0.retryable)" }, complete: d.complete)
    }

    /// Replays whole, byte by byte, cut at every single position, and in random
    /// splits; every way must give the same events. Returns the result.
    static func replayEveryWay(_ provider: any Provider, _ job: Job, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> Replay {
        let bytes = Array(text.utf8)
        let whole = replay(provider, job, bytes, cuts: [])
        let byteByByte = replay(provider, job, bytes, cuts: Array(0...bytes.count))
        #expect(byteByByte == whole, "byte by byte differs:\n\(byteByByte)\nvs whole:\n\(whole)", sourceLocation: sourceLocation)
        for cut in 0...bytes.count {
            let r = replay(provider, job, bytes, cuts: [cut])
            if r != whole {
                Issue.record("split at \(cut) of \(bytes.count) differs:\n\(r)\nvs whole:\n\(whole)", sourceLocation: sourceLocation)
                break
            }
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            let cuts = (0..<Int.random(in: 2...12, using: &rng)).map { _ in Int.random(in: 0...bytes.count, using: &rng) }.sorted()
            let r = replay(provider, job, bytes, cuts: cuts)
            if r != whole {
                Issue.record("splits \(cuts) differ:\n\(r)\nvs whole:\n\(whole)", sourceLocation: sourceLocation)
                break
            }
        }
        return whole
    }

    static func result(_ status: Int, _ body: String, headers: [String: String] = [:], transport: TransportFailure? = nil) -> HTTPResult {
        var r = HTTPResult()
        r.status = status
        r.errorBody = Array(body.utf8)
        r.headers = headers
        r.transportFailure = transport
        r.curlMessage = transport == nil ? "" : "Could not connect to server"
        return r
    }

    static func body(_ r: HTTPRequest) -> JSONValue { (try? JSONValue.parse(r.body)) ?? .null }
}

/// Recorded provider streams replayed through the decoders in every split.
@Suite struct ProviderFixtureTests {
    @Test func openAIToolCallStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.openai), Fixture.job(), ProviderTranscripts.openAIToolCall)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.finishReason == "tool_calls")
        #expect(r.usage == Usage(promptTokens: 61, completionTokens: 17))
        #expect(r.toolCalls.first?["call_id"] == "call_abc" && r.toolCalls.first?["name"] == "get_weather")
        #expect(r.arguments(0) == ["city": "Zürich"], "\(r)")
    }

    @Test func anthropicTextStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.anthropic), Fixture.job(), ProviderTranscripts.anthropicText)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.text == "Grüße aus \"Zürich\" ✓ 🙂\n")
        #expect(r.finishReason == "stop")
        #expect(r.usage == Usage(promptTokens: 35, completionTokens: 15), "input + cache reads are the prompt")
    }

    @Test func anthropicToolUseStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.anthropic), Fixture.job(), ProviderTranscripts.anthropicToolUse)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.text == "Let me check.")
        #expect(r.finishReason == "tool_calls")
        #expect(r.usage == Usage(promptTokens: 472, completionTokens: 89))
        // Block 1 is the first tool call: index 0 in the protocol.
        #expect(Set(r.toolCalls.compactMap { $0["index"]?.intValue }) == [0])
        #expect(r.toolCalls.allSatisfy { $0["call_id"] == "toolu_01T1x" && $0["name"] == "get_weather" })
        #expect(r.arguments(0) == ["city": "Zürich"], "\(r)")
    }

    @Test func anthropicErrorEventMidStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.anthropic), Fixture.job(), ProviderTranscripts.anthropicOverloadedMidStream)
        #expect(r.text == "Once")
        #expect(r.failure?.hasPrefix("upstream_unavailable") == true && r.failure?.contains("retryable=true") == true, "\(r)")
    }

    @Test func geminiTextStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.gemini), Fixture.job(), ProviderTranscripts.geminiText)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.text == "Grüße aus Zürich ✓ 🙂")
        #expect(r.finishReason == "stop")
        #expect(r.usage == Usage(promptTokens: 9, completionTokens: 10), "thinking tokens count as completion")
    }

    @Test func geminiFunctionCall() {
        let r = Fixture.replayEveryWay(Fixture.provider(.gemini), Fixture.job(), ProviderTranscripts.geminiFunctionCall)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.finishReason == "tool_calls")
        #expect(r.toolCalls.count == 1 && r.toolCalls[0]["name"] == "get_weather" && r.toolCalls[0]["call_id"] == "call_0")
        #expect(r.arguments(0) == ["city": "Zürich", "unit": "°C"], "\(r)")
    }

    @Test func geminiSafetyBlocksAreErrorsNamingTheReason() {
        let blocked = Fixture.replayEveryWay(Fixture.provider(.gemini), Fixture.job(), ProviderTranscripts.geminiPromptBlocked)
        #expect(blocked.lines.isEmpty && blocked.failure?.hasPrefix("bad_request") == true, "\(blocked)")
        #expect(blocked.failure?.contains("PROHIBITED_CONTENT") == true)
        let mid = Fixture.replayEveryWay(Fixture.provider(.gemini), Fixture.job(), ProviderTranscripts.geminiSafetyMidStream)
        #expect(mid.text == "Sure, ")
        #expect(mid.failure?.hasPrefix("bad_request") == true && mid.failure?.contains("SAFETY") == true, "\(mid)")
    }

    @Test func cohereTextStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.cohere), Fixture.job(), ProviderTranscripts.cohereText)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.text == "Grüße ✓ 🙂")
        #expect(r.finishReason == "length")
        #expect(r.usage == Usage(promptTokens: 71, completionTokens: 3))
    }

    @Test func cohereToolCallStream() {
        let r = Fixture.replayEveryWay(Fixture.provider(.cohere), Fixture.job(), ProviderTranscripts.cohereToolCall)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.text.isEmpty, "the tool plan is not answer text")
        #expect(r.finishReason == "tool_calls")
        #expect(r.toolCalls.first?["call_id"] == "get_weather_776n8ctsgycn" && r.toolCalls.first?["name"] == "get_weather")
        #expect(r.arguments(0) == ["city": "Zürich"], "\(r)")
        #expect(r.usage == Usage(promptTokens: 1052, completionTokens: 51))
    }

    @Test func ollamaStreams() {
        let chat = Fixture.replayEveryWay(Fixture.provider(.ollama, key: nil), Fixture.job(), ProviderTranscripts.ollamaChat)
        #expect(chat.complete && chat.failure == nil, "\(chat)")
        #expect(chat.text == "Grüße ✓ 🙂\n" && chat.finishReason == "length")
        #expect(chat.usage == Usage(promptTokens: 26, completionTokens: 2))

        let tool = Fixture.replayEveryWay(Fixture.provider(.ollama, key: nil), Fixture.job(), ProviderTranscripts.ollamaToolCall)
        #expect(tool.finishReason == "tool_calls" && tool.usage == Usage(promptTokens: 207, completionTokens: 34), "\(tool)")
        #expect(tool.toolCalls.first?["name"] == "get_current_weather")
        #expect(tool.arguments(0) == ["format": "celsius", "location": "Zürich"], "\(tool)")

        let gen = Fixture.replayEveryWay(Fixture.provider(.ollama, key: nil), Fixture.job("complete"), ProviderTranscripts.ollamaGenerate)
        #expect(gen.complete && gen.text == "That's ✓" && gen.finishReason == "stop", "a last line without newline still counts: \(gen)")
        #expect(gen.usage == Usage(promptTokens: 4, completionTokens: 2))

        let err = Fixture.replayEveryWay(Fixture.provider(.ollama, key: nil), Fixture.job("complete"), ProviderTranscripts.ollamaErrorLine)
        #expect(err.text == "Hi" && err.failure?.contains("unexpected EOF") == true, "\(err)")
    }

    @Test func tgiStreams() {
        let r = Fixture.replayEveryWay(Fixture.provider(.tgi, key: nil), Fixture.job("complete"), ProviderTranscripts.tgiStream)
        #expect(r.complete && r.failure == nil, "\(r)")
        #expect(r.text == "Grüße ✓ 🙂", "special tokens are left out")
        #expect(r.finishReason == "stop" && r.usage == Usage(promptTokens: 7, completionTokens: 3))
        let err = Fixture.replayEveryWay(Fixture.provider(.tgi, key: nil), Fixture.job("complete"), ProviderTranscripts.tgiErrorEvent)
        #expect(err.text == "Hi" && err.failure?.contains("CUDA out of memory") == true, "\(err)")
    }

    @Test func truncatedStreamsAreFailures() {
        let cases: [(ProviderKind, Mode, String)] = [
            (.anthropic, "chat", ProviderTranscripts.anthropicText), (.gemini, "chat", ProviderTranscripts.geminiText),
            (.cohere, "chat", ProviderTranscripts.cohereText), (.ollama, "chat", ProviderTranscripts.ollamaChat),
            (.tgi, "complete", ProviderTranscripts.tgiStream),
        ]
        for (kind, mode, text) in cases {
            let bytes = Array(text.utf8)
            // Cut before the end marker: the last third of the stream never arrives.
            let r = Fixture.replay(Fixture.provider(kind), Fixture.job(mode), Array(bytes.prefix(bytes.count * 2 / 3)), cuts: [])
            #expect(!r.complete && r.failure?.hasPrefix("upstream_error") == true, "\(kind): \(r)")
        }
    }
}

/// Error answers mapped to protocol codes, with retry hints, and keys never echoed.
@Suite struct ProviderErrorMappingTests {
    @Test func anthropicErrors() throws {
        let p = Fixture.provider(.anthropic)
        let limited = p.error(for: Fixture.result(429, ProviderTranscripts.anthropic429Body, headers: ["retry-after": "7"]))
        #expect(limited.code == .rateLimited && limited.retryable && limited.retryAfter == 7)
        #expect(limited.message.contains("per-minute rate limit"))
        let reset = ISO8601DateFormatter().string(from: Date().addingTimeInterval(20))
        let byReset = p.error(for: Fixture.result(429, ProviderTranscripts.anthropic429Body, headers: ["anthropic-ratelimit-requests-reset": reset]))
        #expect((byReset.retryAfter ?? 0) > 15 && (byReset.retryAfter ?? 99) <= 20, "\(byReset)")
        let overloaded = p.error(for: Fixture.result(529, ProviderTranscripts.anthropic529Body))
        #expect(overloaded.code == .upstreamUnavailable && overloaded.retryable)
        let missing = p.error(for: Fixture.result(404, ProviderTranscripts.anthropic404Body))
        #expect(missing.code == .unknownModel && missing.message.contains("claude-nonexistent"))
    }

    @Test func geminiErrors() {
        let p = Fixture.provider(.gemini)
        let limited = p.error(for: Fixture.result(429, ProviderTranscripts.gemini429Body))
        #expect(limited.code == .rateLimited && limited.retryable && limited.retryAfter == 31, "RetryInfo.retryDelay is honoured: \(limited)")
        let daily = p.error(for: Fixture.result(429, ProviderTranscripts.geminiDailyQuotaBody))
        #expect(daily.code == .rateLimited && !daily.retryable, "a spent daily quota is not retried")
        let badKey = p.error(for: Fixture.result(400, ProviderTranscripts.geminiBadKeyBody))
        #expect(badKey.code == .auth && badKey.message.contains("API key not valid"))
    }

    @Test func cohereOllamaTGIAndOpenAIErrors() {
        let cohere = Fixture.provider(.cohere).error(for: Fixture.result(429, ProviderTranscripts.cohere429Body))
        #expect(cohere.code == .rateLimited && cohere.retryable && cohere.message.contains("Trial key"))
        let ollama = Fixture.provider(.ollama, key: nil).error(for: Fixture.result(404, ProviderTranscripts.ollama404Body))
        #expect(ollama.code == .unknownModel && ollama.message.contains("llama9"))
        let tgi = Fixture.provider(.tgi, key: nil).error(for: Fixture.result(422, ProviderTranscripts.tgi422Body))
        #expect(tgi.code == .badRequest && !tgi.retryable)
        let quota = Fixture.provider(.openai).error(for: Fixture.result(429, ProviderTranscripts.openAIQuotaBody, headers: ["retry-after": "1"]))
        #expect(quota.code == .rateLimited && !quota.retryable, "insufficient_quota is not retried")
        let reset = Fixture.provider(.openai).error(for: Fixture.result(429, #"{"error":{"message":"Rate limit reached"}}"#, headers: [
            "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s", "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "6m0s",
        ]))
        #expect(reset.retryAfter == 1.5, "the spent budget's reset counts: \(reset)")
        #expect(Fixture.provider(.openai).error(for: Fixture.result(408, "")).code == .timeout)
        #expect(Fixture.provider(.openai).error(for: Fixture.result(503, "")).code == .upstreamUnavailable)
        #expect(Fixture.provider(.openai).error(for: Fixture.result(0, "", transport: .unreachable)).code == .upstreamUnavailable)
        #expect(Fixture.provider(.openai).error(for: Fixture.result(0, "", transport: .timedOut)).code == .timeout)
        let local = Fixture.provider(.openai).error(for: Fixture.result(0, "", transport: .localResource))
        #expect(local.code == .internal && local.retryable, "out of descriptors here is not the provider's failure: \(local)")
        #expect(Fixture.provider(.openai).error(for: Fixture.result(500, "")).code == .upstreamError)
    }

    @Test func errorsNeverCarryTheAPIKeyOnceTheRegistryRedactsThem() throws {
        let key = "sk-live-0123456789abcdef"
        for kind in [ProviderKind.openai, .azure, .anthropic, .gemini, .cohere, .ollama, .tgi] {
            var config = FarmConfig()
            config.providers = [kind.rawValue: ProviderConfig(kind: kind.rawValue, baseURL: "http://127.0.0.1:1", apiKeyEnv: "LLMQ_TEST_KEY")]
            let registry = try ProviderRegistry(config: config, environment: ["LLMQ_TEST_KEY": key])
            let provider = try #require(registry.providers[kind.rawValue])
            let body = ProviderTranscripts.openAIBadKeyBody.replacingOccurrences(of: "sk-live-0123456789abcdef", with: key)
            let raw = provider.error(for: Fixture.result(401, body))
            #expect(raw.code == .auth, "\(kind): \(raw)")
            let e = registry.redact(raw)
            #expect(!e.message.contains(key) && e.message.contains("[redacted]"), "\(kind): \(e.message)")
            #expect(registry.redact("the key \(key) again") == "the key [redacted] again")
        }
    }
}

/// Jobs written in each provider's request form.
@Suite struct ProviderRequestTests {
    static let conversation = #""messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"{\"temp\":21}"}]"#
    static let tools = #""params":{"max_tokens":64,"temperature":0.5,"stop":["END"],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"tool_choice":{"type":"function","function":{"name":"get_weather"}},"response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object","properties":{"temp":{"type":"number"}}}}}}"#

    static func job() -> Job {
        let raw = #"{"id":"rq-1","model":"m",\#(conversation),\#(tools)}"#
        return try! JobParser().parse(Array(raw.utf8), mode: "chat")
    }

    @Test func anthropicRequest() throws {
        let r = try Fixture.provider(.anthropic, key: "sk-ant").makeRequest(job: Self.job(), model: "claude-x", timeout: nil)
        #expect(r.url == "https://api.anthropic.com/v1/messages")
        #expect(r.headers.contains("x-api-key: sk-ant") && r.headers.contains("anthropic-version: 2023-06-01"))
        let b = Fixture.body(r)
        #expect(b["system"] == "Be brief." && b["stream"] == true && b["max_tokens"] == 64 && b["stop_sequences"] == ["END"])
        let messages = try #require(b["messages"]?.arrayValue)
        #expect(messages.map { $0["role"]?.stringValue } == ["user", "assistant", "user"])
        #expect(messages[0]["content"]?[1]?["source"]?["type"] == "base64")
        #expect(messages[1]["content"]?[0]?["type"] == "tool_use" && messages[1]["content"]?[0]?["input"] == ["city": "Paris"])
        #expect(messages[2]["content"]?[0]?["type"] == "tool_result" && messages[2]["content"]?[0]?["tool_use_id"] == "call_1")
        #expect(b["tools"]?[0]?["input_schema"]?["type"] == "object")
        #expect(b["tool_choice"] == ["type": "tool", "name": "get_weather"])
        #expect(b["output_config"]?["format"]?["type"] == "json_schema")

        let embed = Fixture.job("embed")
        #expect(throws: LLMQError.self) { try Fixture.provider(.anthropic).makeRequest(job: embed, model: "m", timeout: nil) }
        do {
            _ = try Fixture.provider(.anthropic).makeRequest(job: Fixture.job("chat", #""params":{"response_format":{"type":"json_object"}}"#), model: "m", timeout: nil)
            Issue.record("JSON mode without a schema should be a bad_request for anthropic")
        } catch {
            #expect(error.code == .badRequest && error.message.contains("json_schema"))
        }
    }

    @Test func geminiRequest() throws {
        let r = try Fixture.provider(.gemini, key: "g-key").makeRequest(job: Self.job(), model: "gemini-2.0-flash", timeout: nil)
        #expect(r.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
        #expect(r.headers.contains("x-goog-api-key: g-key"))
        let b = Fixture.body(r)
        #expect(b["systemInstruction"]?["parts"]?[0]?["text"] == "Be brief.")
        let contents = try #require(b["contents"]?.arrayValue)
        #expect(contents.map { $0["role"]?.stringValue } == ["user", "model", "user"])
        #expect(contents[0]["parts"]?[1]?["inlineData"]?["mimeType"] == "image/png")
        #expect(contents[1]["parts"]?[0]?["functionCall"]?["args"] == ["city": "Paris"])
        #expect(contents[2]["parts"]?[0]?["functionResponse"] == ["name": "get_weather", "response": ["temp": 21]])
        #expect(b["generationConfig"]?["maxOutputTokens"] == 64 && b["generationConfig"]?["responseMimeType"] == "application/json")
        #expect(b["generationConfig"]?["responseJsonSchema"]?["type"] == "object")
        #expect(b["tools"]?[0]?["functionDeclarations"]?[0]?["name"] == "get_weather")
        #expect(b["toolConfig"]?["functionCallingConfig"] == ["mode": "ANY", "allowedFunctionNames": ["get_weather"]])
        let embed = try Fixture.provider(.gemini).makeRequest(job: Fixture.job("embed", #""params":{"extra":{"taskType":"RETRIEVAL_DOCUMENT"}}"#), model: "text-embedding-004", timeout: nil)
        #expect(embed.url.hasSuffix("/models/text-embedding-004:batchEmbedContents"))
        #expect(Fixture.body(embed)["requests"]?[1]?["content"]?["parts"]?[0]?["text"] == "b")
        #expect(Fixture.body(embed)["requests"]?[0]?["taskType"] == "RETRIEVAL_DOCUMENT")
    }

    @Test func cohereRequest() throws {
        let r = try Fixture.provider(.cohere, key: "co-key").makeRequest(job: Self.job(), model: "command-a", timeout: nil)
        #expect(r.url == "https://api.cohere.com/v2/chat" && r.headers.contains("Authorization: Bearer co-key"))
        let b = Fixture.body(r)
        #expect(b["tool_choice"] == "REQUIRED" && b["tools"]?.arrayValue?.count == 1)
        #expect(b["response_format"]?["type"] == "json_object" && b["response_format"]?["json_schema"]?["type"] == "object")
        #expect(b["messages"]?[0]?["role"] == "system" && b["messages"]?[3]?["tool_call_id"] == "call_1")
        #expect(b["messages"]?[1]?["content"]?[1]?["type"] == "image_url")
        let embed = try Fixture.provider(.cohere).makeRequest(job: Fixture.job("embed"), model: "embed-v4.0", timeout: nil)
        #expect(embed.url.hasSuffix("/v2/embed") && Fixture.body(embed)["input_type"] == "search_document" && Fixture.body(embed)["texts"] == ["a", "b"])
    }

    @Test func ollamaRequest() throws {
        var job = Self.job()
        job.params.toolChoice = "auto"
        let r = try Fixture.provider(.ollama, key: nil).makeRequest(job: job, model: "llama3.2", timeout: nil)
        #expect(r.url == "http://127.0.0.1:11434/api/chat" && !r.headers.contains { $0.hasPrefix("Authorization") })
        let b = Fixture.body(r)
        #expect(b["options"]?["num_predict"] == 64 && b["options"]?["stop"] == ["END"])
        #expect(b["format"]?["type"] == "object")
        #expect(b["messages"]?[1]?["images"] == ["iVBORw0KGgo="] && b["messages"]?[1]?["content"] == "Weather?")
        #expect(b["messages"]?[2]?["tool_calls"]?[0]?["function"]?["arguments"] == ["city": "Paris"])
        #expect(b["messages"]?[3]?["tool_name"] == "get_weather")
        do {
            _ = try Fixture.provider(.ollama, key: nil).makeRequest(job: Self.job(), model: "m", timeout: nil)
            Issue.record("a forced tool choice should be a bad_request for ollama")
        } catch {
            #expect(error.code == .badRequest)
        }
        let gen = try Fixture.provider(.ollama, key: nil).makeRequest(job: Fixture.job("complete"), model: "m", timeout: nil)
        #expect(gen.url.hasSuffix("/api/generate") && Fixture.body(gen)["prompt"] == "Say hi")
        let embed = try Fixture.provider(.ollama, key: nil).makeRequest(job: Fixture.job("embed"), model: "m", timeout: nil)
        #expect(embed.url.hasSuffix("/api/embed") && Fixture.body(embed)["input"] == ["a", "b"])
    }

    @Test func tgiRequests() throws {
        let p = Fixture.provider(.tgi, key: nil)
        let schema = #""params":{"temperature":0,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"type":"string"}}}}}}"#
        let gen = try p.makeRequest(job: Fixture.job("complete", schema), model: "m", timeout: nil)
        #expect(gen.url == "http://127.0.0.1:8080/generate_stream")
        let b = Fixture.body(gen)
        #expect(b["inputs"] == "Say hi" && b["parameters"]?["details"] == true && b["parameters"]?["temperature"] == nil, "temperature 0 means greedy")
        #expect(b["parameters"]?["grammar"]?["type"] == "json" && b["parameters"]?["grammar"]?["value"]?["type"] == "object")
        let chat = try p.makeRequest(job: Fixture.job("chat", schema), model: "tgi", timeout: nil)
        #expect(chat.url == "http://127.0.0.1:8080/v1/chat/completions")
        #expect(Fixture.body(chat)["response_format"]?["type"] == "json_object" && Fixture.body(chat)["response_format"]?["value"]?["type"] == "object")
        #expect(throws: LLMQError.self) { try p.makeRequest(job: Fixture.job("embed"), model: "m", timeout: nil) }
    }

    @Test func openAIPresets() throws {
        let azure = Fixture.provider(.azure, key: "az-key") { $0.baseURL = "https://res.openai.azure.com/openai/"; $0.deployment = "prod-4o" }
        let r = try azure.makeRequest(job: Fixture.job(), model: "gpt-4o", timeout: nil)
        #expect(r.url == "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21")
        #expect(r.headers.contains("api-key: az-key") && !r.headers.contains { $0.hasPrefix("Authorization") })
        let byModel = Fixture.provider(.azure, key: "k") { $0.baseURL = "https://res.openai.azure.com"; $0.apiVersion = "2025-01-01-preview" }
        #expect(try byModel.makeRequest(job: Fixture.job("embed"), model: "emb", timeout: nil).url
            == "https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2025-01-01-preview")
        let v1 = Fixture.provider(.azure, key: "k") { $0.baseURL = "https://res.openai.azure.com/openai/v1" }
        #expect(try v1.makeRequest(job: Fixture.job(), model: "gpt-4o", timeout: nil).url == "https://res.openai.azure.com/openai/v1/chat/completions")
        for (kind, url) in [(ProviderKind.vllm, "http://127.0.0.1:8000/v1"), (.lmstudio, "http://127.0.0.1:1234/v1"), (.llamacpp, "http://127.0.0.1:8080/v1")] {
            let req = try Fixture.provider(kind, key: nil).makeRequest(job: Fixture.job(), model: "m", timeout: nil)
            #expect(req.url == url + "/chat/completions" && !req.headers.contains { $0.hasPrefix("Authorization") }, "\(kind): no key, no header")
        }
    }
}

@Suite struct ProviderConfigTests {
    func load(_ text: String) throws(LLMQError) -> FarmConfig {
        let path = NSTemporaryDirectory() + "llmq-provider-config-\(UUID().uuidString).yaml"
        try? text.write(toFile: path, atomically: true, encoding: .utf8)
        return try ConfigLoader.load(path: path, environment: ["K": "secret"])
    }

    @Test func everyKindAndItsKeysLoad() throws {
        let c = try load("""
            providers:
              a: {kind: anthropic, api_key_env: K, api_version: "2023-06-01", max_tokens: 1024, max_concurrency: 4, cooldown_s: 2, cooldown_max_s: 30, failures_before_cooldown: 3}
              g: {kind: gemini, api_key_env: K}
              c: {kind: cohere, api_key_env: K}
              o: {kind: ollama}
              t: {kind: tgi, base_url: "http://tgi:8080"}
              z: {kind: azure, base_url: "https://res.openai.azure.com", api_key_env: K, deployment: prod, api_version: "2024-10-21"}
              v: {kind: vllm}
              l: {kind: lmstudio}
              p: {kind: llamacpp}
            routes: {r: ["a/claude", "g/gemini-2.0-flash", "o/llama3.2"]}
            """)
        let a = try #require(c.providers["a"])
        #expect(a.maxConcurrency == 4 && a.cooldownS == 2 && a.cooldownMaxS == 30 && a.failuresBeforeCooldown == 3 && a.maxTokens == 1024)
        let r = try ProviderRegistry(config: c, environment: ["K": "secret"])
        #expect(r.providers["a"] is AnthropicProvider && r.providers["g"] is GeminiProvider && r.providers["c"] is CohereProvider)
        #expect(r.providers["o"] is OllamaProvider && r.providers["t"] is TGIProvider && r.providers["z"] is OpenAIProvider)
        #expect(r.limiter.limits == ["a": 4])
    }

    @Test(arguments: [
        ("providers: {a: {kind: anthropic}}", "providers.a of kind anthropic needs an API key"),
        ("providers: {z: {kind: azure, api_key_env: K}}", "providers.z.base_url is needed for kind azure"),
        ("providers: {o: {kind: openai, deployment: x}}", "providers.o.deployment applies to kind azure only"),
        ("providers: {o: {kind: ollama, api_version: x}}", "providers.o.api_version applies to kinds azure"),
        ("providers: {o: {kind: ollama, max_concurrency: 0}}", "providers.o.max_concurrency must be at least 1"),
        ("providers: {o: {kind: ollama, cooldown_s: 10, cooldown_max_s: 5}}", "providers.o.cooldown_max_s must be at least cooldown_s"),
        ("providers: {o: {kind: ollama, max_concurency: 2}}", "unknown key \"max_concurency\""),
    ])
    func mistakesNameTheKey(_ text: String, message: String) {
        do {
            _ = try load(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(message), "got: \(error.message)")
        }
    }

    @Test func theSimHasNoCooldownUnlessAskedForAndOthersDo() throws {
        let c = try load("providers: {s: {kind: sim}, t: {kind: sim, cooldown_s: 2}, o: {kind: ollama}}")
        #expect(c.providers["s"]?.cooldownS == 0 && c.providers["t"]?.cooldownS == 2 && c.providers["o"]?.cooldownS == 5)
    }

    @Test func theReadmeProviderExampleLoads() throws {
        let readme = try String(contentsOfFile: TestEnvironment.packageRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: "\n## Providers\n"))
        let start = try #require(readme.range(of: "```yaml\n", range: section.upperBound..<readme.endIndex))
        let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
        let keys = ["OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "COHERE_API_KEY"]
        let environment = Dictionary(uniqueKeysWithValues: keys.map { ($0, "k") })
        let path = NSTemporaryDirectory() + "llmq-readme-\(UUID().uuidString).yaml"
        try String(readme[start.upperBound..<end.lowerBound]).write(toFile: path, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: path, environment: environment)
        let r = try ProviderRegistry(config: c, environment: environment)
        #expect(r.providers.count == 11 && r.routes.count == 3)
        #expect(try r.resolve("chat").map(\.provider.name) == ["anthropic", "openai", "ollama"])
    }

    @Test func aGatewayInFrontNeedsNoKey() throws {
        let c = try load("providers: {a: {kind: anthropic, base_url: \"http://gateway:8080\"}}")
        #expect(c.providers["a"]?.apiKeyEnv == nil)
    }
}

@Suite struct ProviderLimiterTests {
    @Test func boundsConcurrencyPerProviderAndHandsPermitsOnInOrder() async {
        let limiter = ProviderLimiter(limits: ["slow": 2])
        let peak = PeakCounter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let held = await limiter.acquire("slow")
                    #expect(held)
                    await peak.enter()
                    try? await Task.sleep(for: .milliseconds(5))
                    await peak.leave()
                    limiter.release("slow")
                }
            }
        }
        #expect(await peak.peak == 2)
        #expect(limiter.usage["slow"]?.inUse == 0)
        #expect(await limiter.acquire("unlimited") == false, "no limit, nothing to give back")
    }

    @Test func aCancelledWaiterLeavesWithoutAPermit() async {
        let limiter = ProviderLimiter(limits: ["p": 1])
        #expect(await limiter.acquire("p"))
        let waiter = Task { await limiter.acquire("p") }
        var spins = 0
        while limiter.usage["p"]?.waiting != 1 {
            spins += 1
            guard spins < 1_000_000 else {
                Issue.record("the waiter never queued")
                return
            }
            await Task.yield()
        }
        waiter.cancel()
        #expect(await waiter.value == false)
        limiter.release("p")
        #expect(limiter.usage["p"]?.inUse == 0 && limiter.usage["p"]?.waiting == 0)
    }

    @Test func theBoardCoolsAProviderDownLocallyWithoutRedis() async {
        let board = CooldownBoard(url: nil, keys: Keys(prefix: "t"), policies: [
            "p": .init(cooldownS: 5, cooldownMaxS: 60, failuresBeforeCooldown: 3), "off": .init(cooldownS: 0, cooldownMaxS: 0, failuresBeforeCooldown: 0),
        ])
        #expect(await board.remaining("p") == nil)
        board.record("p", error: LLMQError(.rateLimited, "429", retryable: true, retryAfter: 2))
        let left = await board.remaining("p") ?? 0
        #expect(left > 1.5 && left <= 2)
        board.record("p", error: LLMQError(.rateLimited, "quota spent", retryable: false))
        #expect((await board.remaining("p") ?? 0) > 50, "a spent quota cools down for cooldown_max_s")
        board.record("p", error: LLMQError(.badRequest, "no"))
        board.record("off", error: LLMQError(.rateLimited, "429", retryable: true, retryAfter: 9))
        #expect(await board.remaining("off") == nil, "cooldown_s 0 turns it off")
    }
}

extension JSONValue {
    /// An array element, for test lookups like `v["tools"]?[0]?["name"]`.
    subscript(_ i: Int) -> JSONValue? { arrayValue.flatMap { i < $0.count ? $0[i] : nil } }
}

actor PeakCounter {
    private var now = 0
    private(set) var peak = 0
    func enter() {
        now += 1
        peak = max(peak, now)
    }
    func leave() { now -= 1 }
}
