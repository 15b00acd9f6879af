import Foundation
import LLMQ
import LLMQTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A farm configured with one provider of every kind, all pointing at the test's
/// `llmq sim`, which answers each in its own wire format (chosen by path). Keys come
/// from a file, and the sim's `auth=KEY` knob checks each arrives in its provider's header.
struct ProviderFarm {
    static let key = "sk-sim-SECRET-4242"
    static let kinds = ["openai", "azure", "vllm", "lmstudio", "llamacpp", "anthropic", "gemini", "cohere", "ollama", "tgi"]

    let env: TestEnvironment
    let keyFile: String

    init(_ name: String) throws {
        env = try TestEnvironment(name)
        keyFile = env.dir + "/api-key"
        try (Self.key + "\n").write(toFile: keyFile, atomically: true, encoding: .utf8)
    }

    var sim: String { "http://127.0.0.1:\(env.simPort)" }

    /// `options` adds keys to a provider's entry, e.g. `["ollama": "max_concurrency: 1"]`.
    func config(workers: Int = 1, routes: [String: [String]] = [:], options: [String: String] = [:], name: String = "providers.yaml") throws -> String {
        let common = "timeout_s: 30, idle_timeout_s: 5"
        let entries: [(String, String)] = [
            ("openai", "kind: openai, base_url: \"\(sim)/v1\", api_key_file: \(keyFile)"),
            ("azure", "kind: azure, base_url: \"\(sim)\", api_key_file: \(keyFile), api_version: \"2024-10-21\""),
            ("vllm", "kind: vllm, base_url: \"\(sim)/v1\""),
            ("lmstudio", "kind: lmstudio, base_url: \"\(sim)/v1\""),
            ("llamacpp", "kind: llamacpp, base_url: \"\(sim)/v1\""),
            ("anthropic", "kind: anthropic, base_url: \"\(sim)\", api_key_file: \(keyFile)"),
            ("gemini", "kind: gemini, base_url: \"\(sim)/v1beta\", api_key_file: \(keyFile)"),
            ("cohere", "kind: cohere, base_url: \"\(sim)\", api_key_file: \(keyFile)"),
            ("ollama", "kind: ollama, base_url: \"\(sim)\""),
            ("tgi", "kind: tgi, base_url: \"\(sim)\", headers: {X-Sim: \"tokens=5,auth=\(Self.key)\"}, api_key_file: \(keyFile)"),
        ]
        var text = """
            redis: \(env.redisURL)
            prefix: \(env.prefix)
            workers: \(workers)
            drain_timeout_s: 5
            restart_backoff_s: 0.1
            log_level: info
            http_port: 0
            modes:
              chat: {concurrency: 16}
              complete: {concurrency: 8}
              embed: {concurrency: 8}
            providers:

            """
        for (p, entry) in entries {
            text += "  \(p): {\(entry), \(common)\(options[p].map { ", \($0)" } ?? "")}\n"
        }
        if !routes.isEmpty {
            text += "routes:\n"
            for (r, t) in routes.sorted(by: { $0.key < $1.key }) { text += "  \(r): [\(t.map { "\"\($0)\"" }.joined(separator: ", "))]\n" }
        }
        let path = "\(env.dir)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Providers configured with the key (Ollama and vLLM need none).
    static let keyed: Set<String> = ["openai", "azure", "anthropic", "gemini", "cohere", "tgi"]

    /// The model of a sim target; for keyed providers the sim also checks the key arrived (`auth=KEY`).
    static func model(_ provider: String, _ knobs: String) -> String {
        keyed.contains(provider) ? "\(provider)/sim:\(knobs),auth=\(key)" : "\(provider)/sim:\(knobs)"
    }

    func push(_ mode: Mode, _ jobs: [String]) throws {
        let redis = try env.client()
        for j in jobs { try redis.run("LPUSH", env.key("{\(mode)}:queue"), j) }
    }

    static func chat(_ id: String, _ model: String, params: String = "", extra: String = "") -> String {
        #"{"id":"\#(id)","model":"\#(model)","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Name a city with ünïcode"}]\#(params.isEmpty ? "" : #","params":\#(params)"#)\#(extra)}"#
    }

    /// `GET /sim/stats` of the test's sim: request counts per wire format, open streams.
    func simStats() async throws -> [String: Int] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: "\(sim)/sim/stats")!)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Int])
    }

    func stop(_ farm: ChildProcess) async throws {
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm)) == 0, "\(env.log())")
    }
}

extension [Event] {
    var types: [String] { map(\.type) }
    var text: String { filter { $0.type == "chunk" }.compactMap { $0["text"]?.stringValue }.joined() }
    var terminal: Event? { last { $0.isTerminal } }
    func arguments(_ index: Int = 0) -> JSONValue? {
        let text = filter { $0.type == "tool_call" && $0["index"]?.intValue == index }.compactMap { $0["arguments"]?.stringValue }.joined()
        return try? JSONValue.parse([UInt8](text.utf8))
    }
}

/// Every provider kind streaming through a real farm (redis-server, `llmq sim`, `llmq farm`).
@Suite(.serialized) struct ProviderFarmTests {
    @Test func chatAndCompleteStreamTokenByTokenFromEveryProviderKind() async throws {
        let f = try ProviderFarm("prov-chat")
        let events = try f.env.collector()
        let farm = try f.env.start(["farm", "--config", try f.config()])
        var ids: [String] = []
        for p in ProviderFarm.kinds {
            try f.push("chat", [ProviderFarm.chat("chat-\(p)", ProviderFarm.model(p, "tokens=5,delay_ms=2"), params: #"{"max_tokens":50}"#)])
            ids.append("chat-\(p)")
        }
        for p in ["anthropic", "gemini", "cohere", "ollama", "tgi", "openai"] {
            try f.push("complete", [#"{"id":"complete-\#(p)","model":"\#(ProviderFarm.model(p, "tokens=4"))","prompt":"Once upon a time"}"#])
            ids.append("complete-\(p)")
        }
        let all = try events.waitForTerminal(ids, timeout: 60)
        var lines: [String] = []
        for id in ids {
            let evs = all[id]!
            // TGI's /generate_stream names no model, so its knobs come from the X-Sim header (tokens=5).
            let n = id.hasPrefix("chat-") || id == "complete-tgi" ? 5 : 4
            let provider = String(id.split(separator: "-", maxSplits: 1)[1])
            #expect(evs.types == ["start"] + Array(repeating: "chunk", count: n) + ["done"], "\(id): \(evs)")
            #expect(evs.map(\.seq) == Array(0...(n + 1)).map { Optional($0) }, "\(id)")
            #expect(evs.first?["provider"] == .string(provider), "\(id): \(evs.first?.raw ?? "")")
            let done = try #require(evs.terminal)
            #expect(done["finish_reason"] == "stop", "\(id): \(done.raw)")
            #expect((done["usage"]?["prompt_tokens"]?.intValue ?? 0) > 0, "\(id): \(done.raw)")
            // TGI counts its end-of-sequence token among generated_tokens.
            #expect(done["usage"]?["completion_tokens"]?.intValue == (id == "complete-tgi" ? n + 1 : n), "\(id): \(done.raw)")
            #expect(evs.text.split(separator: " ").count == n, "\(id): \(evs.text)")
            lines += evs.map(\.raw)
        }
        try SchemaCheck.validate("event", lines)
        #expect(events.partialPayloads == 0)
        try await f.stop(farm)
    }

    @Test func embedModeReturnsOneVectorPerInputFromEveryProviderThatEmbeds() async throws {
        let f = try ProviderFarm("prov-embed")
        let events = try f.env.collector()
        let farm = try f.env.start(["farm", "--config", try f.config()])
        let embedders = ["openai", "azure", "vllm", "lmstudio", "gemini", "cohere", "ollama"]
        for p in embedders + ["anthropic", "tgi"] {
            try f.push("embed", [#"{"id":"embed-\#(p)","model":"\#(ProviderFarm.model(p, "dim=3"))","input":["alpha","beta gamma"]}"#])
        }
        let all = try events.waitForTerminal((embedders + ["anthropic", "tgi"]).map { "embed-\($0)" }, timeout: 60)
        var alpha: Set<JSONValue> = []
        for p in embedders {
            let evs = all["embed-\(p)"]!
            #expect(evs.types == ["start", "embedding", "embedding", "done"], "\(p): \(evs)")
            #expect(evs[1]["index"] == 0 && evs[2]["index"] == 1, "\(p)")
            #expect(evs[1]["vector"]?.arrayValue?.count == 3 && evs[2]["vector"]?.arrayValue?.count == 3, "\(p): \(evs)")
            #expect(evs.last?["finish_reason"] == "stop")
            if let v = evs[1]["vector"] { alpha.insert(v) }
            if p != "gemini" { #expect((evs.last?["usage"]?["prompt_tokens"]?.intValue ?? 0) > 0, "\(p) reports usage: \(evs.last?.raw ?? "")") }
        }
        #expect(alpha.count == 1, "the same text embeds the same through every wire format: \(alpha)")
        for p in ["anthropic", "tgi"] {
            let e = try #require(all["embed-\(p)"]?.terminal)
            #expect(e["code"] == "bad_request" && e["retryable"] == false, "\(p): \(e.raw)")
            #expect(e["message"]?.stringValue?.contains("embeddings") == true)
        }
        try await f.stop(farm)
    }

    @Test func toolCallsStreamAsToolCallEventsFromEveryProvider() async throws {
        let f = try ProviderFarm("prov-tools")
        let events = try f.env.collector()
        let farm = try f.env.start(["farm", "--config", try f.config()])
        let tools = #"[{"type":"function","function":{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]"#
        let providers = ["openai", "azure", "vllm", "anthropic", "gemini", "cohere", "ollama", "tgi"]
        for p in providers {
            let choice = p == "ollama" ? #""auto""# : #""required""#
            try f.push("chat", [ProviderFarm.chat("tool-\(p)", ProviderFarm.model(p, "tool=get_weather"), params: #"{"tools":\#(tools),"tool_choice":\#(choice)}"#)])
        }
        try f.push("chat", [ProviderFarm.chat("tool-ollama-forced", ProviderFarm.model("ollama", "tool=get_weather"), params: #"{"tools":\#(tools),"tool_choice":"required"}"#)])
        let all = try events.waitForTerminal(providers.map { "tool-\($0)" } + ["tool-ollama-forced"], timeout: 60)
        let redis = try f.env.client()
        for p in providers {
            let evs = all["tool-\(p)"]!
            #expect(evs.contains { $0.type == "tool_call" }, "\(p): \(evs)")
            #expect(evs.filter { $0.type == "tool_call" }.allSatisfy { $0["name"] == "get_weather" && $0["index"] == 0 && ($0["call_id"]?.stringValue ?? "").count > 0 }, "\(p): \(evs)")
            #expect(evs.arguments() == ["city": "Paris"], "\(p): \(evs)")
            #expect(evs.terminal?["finish_reason"] == "tool_calls", "\(p): \(evs.terminal?.raw ?? "")")
            let result = try JSONValue.parse(Array(try #require(try redis.run("GET", f.env.key("{tool-\(p)}:result")).string).utf8))
            #expect(result["tool_calls"]?.arrayValue?.first?["name"] == "get_weather", "\(p): \(result)")
            #expect(result["tool_calls"]?.arrayValue?.first?["arguments"] == #"{"city":"Paris"}"#, "\(p): \(result)")
        }
        let forced = try #require(all["tool-ollama-forced"]?.terminal)
        #expect(forced["code"] == "bad_request" && forced["message"]?.stringValue?.contains("ollama") == true, "\(forced.raw)")
        try await f.stop(farm)
    }

    @Test func structuredOutputPassesTheSchemaToEveryProviderThatTakesOne() async throws {
        let f = try ProviderFarm("prov-json")
        let events = try f.env.collector()
        let farm = try f.env.start(["farm", "--config", try f.config()])
        let schema = #"{"type":"json_schema","json_schema":{"name":"city","strict":true,"schema":{"type":"object","properties":{"city":{"type":"string"},"population":{"type":"integer"}},"required":["city","population"],"additionalProperties":false}}}"#
        let providers = ["openai", "azure", "anthropic", "gemini", "cohere", "ollama", "tgi"]
        for p in providers {
            try f.push("chat", [ProviderFarm.chat("json-\(p)", ProviderFarm.model(p, "tokens=3"), params: #"{"response_format":\#(schema)}"#)])
        }
        try f.push("complete", [#"{"id":"json-tgi-generate","model":"tgi/tgi","prompt":"A city:","params":{"response_format":\#(schema)}}"#])
        try f.push("chat", [ProviderFarm.chat("json-anthropic-noschema", ProviderFarm.model("anthropic", "tokens=3"), params: #"{"response_format":{"type":"json_object"}}"#)])
        let ids = providers.map { "json-\($0)" } + ["json-tgi-generate", "json-anthropic-noschema"]
        let all = try events.waitForTerminal(ids, timeout: 60)
        for id in ids.dropLast() {
            let evs = all[id]!
            #expect(evs.terminal?.type == "done", "\(id): \(evs)")
            // The sim answers a schema with a fitting document only when it found the schema where that provider reads it.
            let doc = try? JSONValue.parse(Array(evs.text.utf8))
            #expect(doc == ["city": "sim", "population": 1], "\(id): \(evs.text)")
        }
        let refused = try #require(all["json-anthropic-noschema"]?.terminal)
        #expect(refused["code"] == "bad_request" && refused["message"]?.stringValue?.contains("json_schema") == true, "\(refused.raw)")
        try await f.stop(farm)
    }

    @Test func a429FallsBackAndCoolsTheProviderDownForTheWholeFarm() async throws {
        let f = try ProviderFarm("prov-cooldown")
        let routes = [
            "cool": [ProviderFarm.model("anthropic", "fault=429,retry_after=30"), ProviderFarm.model("gemini", "tokens=3")],
            "solo": [ProviderFarm.model("anthropic", "tokens=3")],
        ]
        let config = try f.config(routes: routes)
        let events = try f.env.collector()
        let redis = try f.env.client()
        let first = try f.env.start(["farm", "--config", config])
        try f.push("chat", [ProviderFarm.chat("c-1", "cool")])
        let c1 = try events.waitForTerminal(["c-1"])["c-1"]!
        #expect(c1.types == ["start", "chunk", "chunk", "chunk", "done"], "fell back before any output: \(c1)")
        #expect(c1.first?["provider"] == "gemini", "the start event names the target that answered")
        let cooldownKey = f.env.key("cooldown:anthropic")
        try f.env.until("the 429 to be shared as a cooldown in Redis") { (try redis.run("PTTL", cooldownKey).int ?? -2) > 20_000 }
        #expect(try await f.simStats()["requests_anthropic"] == 1)
        try await f.stop(first)

        // A worker that never saw the 429 learns it from Redis and leaves the provider alone.
        let second = try f.env.start(["worker", "--config", config, "--id", "late-joiner"], log: "worker2.log")
        let ids = (2...6).map { "c-\($0)" }
        try f.push("chat", ids.map { ProviderFarm.chat($0, "cool") })
        try f.push("chat", [ProviderFarm.chat("solo-1", "solo", extra: #","max_attempts":1,"timeout_s":3"#)])
        let all = try events.waitForTerminal(ids + ["solo-1"])
        for id in ids {
            #expect(all[id]!.types == ["start", "chunk", "chunk", "chunk", "done"] && all[id]!.first?["provider"] == "gemini", "\(id): \(all[id]!)")
        }
        let solo = try #require(all["solo-1"]?.terminal)
        // Waiting for a cooldown is not an attempt, but it may not outlast the job's timeout_s: it ends now.
        #expect(solo["code"] == "timeout" && solo["attempt"] == 1, "the last target cooling down past the budget ends timeout: \(solo.raw)")
        #expect(solo["message"]?.stringValue?.contains("cooling down") == true)
        #expect(try await f.simStats()["requests_anthropic"] == 1, "no worker called the cooling provider again")
        #expect(f.env.log("worker2.log").contains("late-joiner"), "the jobs ran on the late joiner")
        try await f.stop(second)
    }

    @Test func repeatedFailuresCountedAcrossWorkersCoolAProviderDown() async throws {
        let f = try ProviderFarm("prov-failures")
        let config = try f.config(
            routes: ["flaky": ["ollama/sim:fault=500", ProviderFarm.model("cohere", "tokens=2")]],
            options: ["ollama": "failures_before_cooldown: 3, cooldown_s: 30"])
        let events = try f.env.collector()
        let redis = try f.env.client()
        // Three workers, one after the other, each sees one failure: only a shared count reaches three.
        for i in 1...3 {
            let worker = try f.env.start(["worker", "--config", config, "--id", "w\(i)"], log: "w\(i).log")
            try f.push("chat", [ProviderFarm.chat("f-\(i)", "flaky")])
            let evs = try events.waitForTerminal(["f-\(i)"])["f-\(i)"]!
            #expect(evs.terminal?.type == "done" && evs.first?["provider"] == "cohere", "fell back: \(evs)")
            if i < 3 {
                try f.env.until("failure \(i) counted in Redis") { try redis.run("GET", f.env.key("failures:ollama")).string == String(i) }
            }
            try await f.stop(worker)
        }
        try f.env.until("the third failure in a row to start a cooldown") {
            (try redis.run("PTTL", f.env.key("cooldown:ollama")).int ?? -2) > 20_000
        }
        #expect((try redis.run("GET", f.env.key("cooldown:ollama")).string ?? "").contains("failures"))
        #expect(try redis.run("EXISTS", f.env.key("failures:ollama")) == .int(0), "the count starts over")
        let farm = try f.env.start(["farm", "--config", config])
        let ids = (4...9).map { "f-\($0)" }
        try f.push("chat", ids.map { ProviderFarm.chat($0, "flaky") })
        let all = try events.waitForTerminal(ids)
        for id in ids {
            #expect(all[id]!.terminal?.type == "done" && all[id]!.first?["provider"] == "cohere", "\(id): \(all[id]!)")
        }
        #expect(try await f.simStats()["requests_ollama"] == 3, "once the cooldown began nobody called ollama")
        try await f.stop(farm)
    }

    @Test func maxConcurrencyBoundsRequestsToOneProviderPerWorker() async throws {
        let f = try ProviderFarm("prov-limit")
        let config = try f.config(options: ["ollama": "max_concurrency: 2"])
        let events = try f.env.collector()
        let farm = try f.env.start(["farm", "--config", config])
        let ids = (0..<6).map { "lim-\($0)" }
        try f.push("chat", ids.map { ProviderFarm.chat($0, "ollama/sim:tokens=10,delay_ms=30") })
        _ = try events.waitForTerminal(ids, timeout: 60)
        // The sim counts the most streams it had open at once: 6 jobs and 16 chat permits, but 2 at a time to ollama.
        let peak = try await f.simStats()["peak_active"]
        #expect(peak == 2, "at most 2 streams to ollama at once; saw \(peak ?? -1)")
        #expect(ids.allSatisfy { events.events($0).terminal?.type == "done" })
        try await f.stop(farm)
    }

    @Test func upstreamErrorsMapToProtocolCodesWithoutTheKey() async throws {
        let f = try ProviderFarm("prov-errors")
        // Cooldowns off here, so one job's 429 does not change the next one's answer.
        let off = Dictionary(uniqueKeysWithValues: ProviderFarm.kinds.map { ($0, "cooldown_s: 0") })
        let events = try f.env.collector()
        let farm = try f.env.start(["farm", "--config", try f.config(options: off)])
        let cases: [(String, String, String, Bool)] = [
            ("e-overloaded", ProviderFarm.model("anthropic", "fault=529"), "upstream_unavailable", true),
            ("e-limited", ProviderFarm.model("cohere", "fault=429,retry_after=1"), "rate_limited", true),
            ("e-quota", ProviderFarm.model("gemini", "fault=quota"), "rate_limited", false),
            ("e-openai-quota", ProviderFarm.model("openai", "fault=quota"), "rate_limited", false),
            ("e-safety", ProviderFarm.model("gemini", "fault=safety"), "bad_request", false),
            ("e-missing", ProviderFarm.model("ollama", "fault=404"), "unknown_model", false),
            ("e-invalid", ProviderFarm.model("tgi", "fault=400"), "bad_request", false),
            ("e-gemini-key", "gemini/sim:tokens=2,auth=some-other-key", "auth", false),
            ("e-anthropic-key", "anthropic/sim:tokens=2,auth=some-other-key", "auth", false),
            ("e-azure-key", "azure/sim:tokens=2,auth=some-other-key", "auth", false),
            ("e-midstream", ProviderFarm.model("anthropic", "tokens=6,fault=error_event,after_tokens=2"), "upstream_unavailable", true),
            ("e-ollama-midstream", ProviderFarm.model("ollama", "tokens=6,fault=error_event,after_tokens=2"), "upstream_error", true),
        ]
        try f.push("chat", cases.map { ProviderFarm.chat($0.0, $0.1, extra: #","max_attempts":1"#) })
        let all = try events.waitForTerminal(cases.map(\.0), timeout: 60)
        for (id, _, code, retryable) in cases {
            let e = try #require(all[id]?.terminal)
            #expect(e.type == "error" && e["code"] == .string(code) && e["retryable"] == .bool(retryable), "\(id): \(e.raw)")
            #expect((e["message"]?.stringValue ?? "").count > 20, "\(id): \(e.raw)")
            #expect(!e.raw.contains(ProviderFarm.key), "\(id) leaked the API key: \(e.raw)")
        }
        #expect(all["e-safety"]?.terminal?["message"]?.stringValue?.contains("SAFETY") == true)
        #expect(all["e-anthropic-key"]?.terminal?["message"]?.stringValue?.contains("[redacted]") == true, "the sim echoed the key; llmq hid it")
        #expect(all["e-midstream"]!.types == ["start", "chunk", "chunk", "error"], "\(all["e-midstream"]!)")
        #expect(!f.env.log().contains("provided: \(ProviderFarm.key)"), "the sim's echo of the key must not reach the farm's log")
        try await f.stop(farm)
    }

    @Test func modelListsComeFromEachProvidersOwnCall() async throws {
        let f = try ProviderFarm("prov-models")
        let config = try ConfigLoader.load(path: try f.config(), environment: [:])
        let registry = try ProviderRegistry(config: config, environment: [:])
        let engine = HTTPEngine(sink: nil)
        engine.start()
        for p in ["openai", "vllm", "anthropic", "gemini", "cohere", "ollama"] {
            let names = try await registry.models(of: p, engine: engine)
            #expect(names.contains { $0.hasPrefix("sim-1") }, "\(p): \(names)")
        }
        #expect(try await registry.models(of: "tgi", engine: engine) == ["sim/tgi-1"])
        await #expect(throws: LLMQError.self) { try await registry.models(of: "azure", engine: engine) }
        await engine.shutdown()
    }
}
