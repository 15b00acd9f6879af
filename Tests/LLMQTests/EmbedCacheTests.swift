import Foundation
import LLMQ
import LLMQTestSupport
import Testing

@testable import LLMQGateway

/// `embed_cache` against a real farm and sim: what goes upstream is read from the sim's own
/// counters (`embedding_requests`, `embedding_inputs` in /sim/stats).
@Suite(.serialized) struct EmbedCacheTests {
    struct Farm {
        let env: TestEnvironment
        let events: EventCollector
        let redis: PlainRedis
        /// The farm's /metrics.
        let httpPort: Int

        init(_ name: String) throws {
            env = try TestEnvironment(name)
            // `emb` caches per route (object form); `prov` through its provider; `plain` not at all; `tiny` has a budget
            // smaller than one vector; `brief` keeps vectors three seconds. The sim's vectors depend only on text and size.
            let config = try env.writeConfig(
                extra: """
                    routes:
                      emb: {targets: ["sim/sim-embed-1:dim=8"], embed_cache: {ttl_s: 600, max_bytes: 1048576}}
                      plain: ["sim/sim-embed-1:dim=8"]
                      prov: ["simc/sim-embed-3:dim=6"]
                      tiny: {targets: ["sim/sim-embed-2:dim=200"], embed_cache: {ttl_s: 600, max_bytes: 1024}}
                      brief: {targets: ["sim/sim-embed-4:dim=4"], embed_cache: {ttl_s: 3}}

                    """,
                providers: "  simc: {kind: sim, base_url: \"\(env.simURL)\", embed_cache: {ttl_s: 600}}\n")
            httpPort = try FreePort.find()
            let text = try String(contentsOfFile: config, encoding: .utf8)
            try text.replacingOccurrences(of: "http_port: 0\n", with: "http_host: 127.0.0.1\nhttp_port: \(httpPort)\n")
                .write(toFile: config, atomically: true, encoding: .utf8)
            events = try env.collector()
            redis = try env.client()
            _ = try env.start(["farm", "--config", config])
        }

        func stats() throws -> [String: Int] {
            let data = try Data(contentsOf: URL(string: "http://127.0.0.1:\(env.simPort)/sim/stats")!)
            return (try JSONValue.parse(Array(data)).objectValue ?? [:]).compactMapValues(\.intValue)
        }

        /// Pushes an embed job and returns its events once it ended.
        func embed(_ id: String, model: String, _ inputs: [String], params: String = "") throws -> [Event] {
            let list = inputs.map { "\"\($0)\"" }.joined(separator: ",")
            let p = params.isEmpty ? "" : #","params":\#(params)"#
            try redis.run("LPUSH", env.key("{embed}:queue"), #"{"id":"\#(id)","model":"\#(model)","input":[\#(list)]\#(p)}"#)
            let seen = try events.waitForTerminal([id])[id]!
            #expect(seen.last?.type == "done", "\(id): \(seen)")
            return seen
        }

        /// Each embedding event's (index, vector as the line carries it), in the order they arrived.
        static func vectors(_ events: [Event]) -> [(Int, String)] {
            events.filter { $0.type == "embedding" }.map { e in
                let vector = e.raw.range(of: #","vector":"#).map { String(e.raw[$0.upperBound...].dropLast()) } ?? ""
                return (e["index"]?.intValue ?? -1, vector)
            }
        }
    }

    @Test func repeatsComeFromRedisAndPartialBatchesSendOnlyTheMissesInOrder() async throws {
        let farm = try Farm("embed-cache")
        let before = try farm.stats()

        let first = Farm.vectors(try farm.embed("e1", model: "emb", ["alpha", "beta"]))
        var s = try farm.stats()
        #expect(s["embedding_requests"]! - before["embedding_requests"]! == 1 && s["embedding_inputs"]! - before["embedding_inputs"]! == 2)
        #expect(first.map(\.0) == [0, 1])

        // The second identical job makes no upstream call and answers the same vectors.
        let again = try farm.embed("e2", model: "emb", ["alpha", "beta"])
        let after = try farm.stats()
        #expect(after["embedding_requests"] == s["embedding_requests"], "an identical job went upstream: \(after)")
        #expect(Farm.vectors(again).map(\.0) == [0, 1] && Farm.vectors(again).map(\.1) == first.map(\.1))
        #expect(again.last?["usage"]?.objectValue?["prompt_tokens"]?.intValue == 0, "\(again)")
        s = after

        // Half cached: only gamma and delta go upstream; every input is answered, in input order, with the
        // vector an uncached route gives.
        let mixed = Farm.vectors(try farm.embed("e3", model: "emb", ["gamma", "alpha", "delta", "beta"]))
        let m = try farm.stats()
        #expect(m["embedding_requests"]! - s["embedding_requests"]! == 1 && m["embedding_inputs"]! - s["embedding_inputs"]! == 2, "\(m)")
        let reference = Farm.vectors(try farm.embed("e3-ref", model: "plain", ["gamma", "alpha", "delta", "beta"]))
        #expect(mixed.map(\.0) == [0, 1, 2, 3], "\(mixed)")
        #expect(mixed.map(\.1) == reference.map(\.1))
        #expect(mixed[1].1 == first[0].1 && mixed[3].1 == first[1].1)

        // params.cache false: straight upstream, whatever is cached.
        s = try farm.stats()
        _ = try farm.embed("e4", model: "emb", ["alpha", "beta"], params: #"{"cache":false}"#)
        #expect(try farm.stats()["embedding_inputs"]! - s["embedding_inputs"]! == 2)

        // A provider's embed_cache works alike; the key covers the model and params.extra, so other dimensions miss.
        s = try farm.stats()
        _ = try farm.embed("p1", model: "prov", ["alpha"])
        _ = try farm.embed("p2", model: "prov", ["alpha"])
        #expect(try farm.stats()["embedding_requests"]! - s["embedding_requests"]! == 1)
        _ = try farm.embed("p3", model: "prov", ["alpha"], params: #"{"extra":{"dimensions":6}}"#)
        #expect(try farm.stats()["embedding_requests"]! - s["embedding_requests"]! == 2)

        // Inputs, not calls, are counted, per provider; bytes saved are the cached vectors' JSON.
        let metrics = try OperationsTests.scrapeUntil(farm.httpPort, "the embedding cache's counters") { m in
            m.sum("llmq_embed_cache_hits_total", ["provider": "sim"]) == 4 && m.sum("llmq_embed_cache_misses_total", ["provider": "sim"]) == 4
                && m.sum("llmq_embed_cache_hits_total", ["provider": "simc"]) == 1 && m.sum("llmq_embed_cache_misses_total", ["provider": "simc"]) == 2
        }
        let saved = Double((first + first).map(\.1.utf8.count).reduce(0, +))
        #expect(metrics.sum("llmq_embed_cache_saved_bytes_total", ["provider": "sim"]) == saved, "\(metrics.series("llmq_embed_cache_saved_bytes_total"))")

        // Entries are plain keys with the configured expiry.
        let keys = try farm.redis.run("KEYS", farm.env.key("embed_cache:*")).array?.compactMap(\.string).filter { !$0.contains(":bytes:") } ?? []
        #expect(keys.count == 6, "\(keys)")  // alpha, beta, gamma, delta on emb; alpha twice on prov
        for k in keys {
            let ttl = try farm.redis.run("TTL", k).int ?? -2
            #expect((590...600).contains(ttl), "\(k) ttl \(ttl)")
        }
    }

    @Test func entriesExpireAfterTTLAndTheBudgetBoundsWhatIsStored() async throws {
        let farm = try Farm("embed-cache-ttl")
        var s = try farm.stats()
        _ = try farm.embed("t1", model: "brief", ["river"])
        _ = try farm.embed("t2", model: "brief", ["river"])
        #expect(try farm.stats()["embedding_requests"]! - s["embedding_requests"]! == 1, "the second job within ttl_s went upstream")
        let entries = { try farm.redis.run("KEYS", farm.env.key("embed_cache:*")).array?.compactMap(\.string).filter { !$0.contains(":bytes:") } ?? [] }
        let ttls = try entries().map { try farm.redis.run("TTL", $0).int ?? -2 }
        #expect(ttls.count == 1 && (1...3).contains(ttls[0]), "\(ttls)")
        try farm.env.until("the entry to expire (ttl_s 3)", timeout: 15) { try entries().isEmpty }
        _ = try farm.embed("t3", model: "brief", ["river"])
        #expect(try farm.stats()["embedding_requests"]! - s["embedding_requests"]! == 2, "an expired entry answered a job")

        // A vector larger than max_bytes is never stored, so the repeat goes upstream too.
        s = try farm.stats()
        let big = try farm.embed("b1", model: "tiny", ["lake"])
        _ = try farm.embed("b2", model: "tiny", ["lake"])
        #expect(Farm.vectors(big).first!.1.utf8.count > 1024)
        #expect(try farm.stats()["embedding_requests"]! - s["embedding_requests"]! == 2, "a vector over max_bytes was stored")
    }

    @Test func configurationAndJobsAreChecked() throws {
        let dir = NSTemporaryDirectory() + "llmq-embed-config-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases = [
            ("routes: {e: {targets: [\"s/m\"], embed_cache: {ttl_s: 0}}}", "routes.e.embed_cache.ttl_s"),
            ("routes: {e: {targets: [\"s/m\"], embed_cache: {max_bytes: 10}}}", "routes.e.embed_cache.max_bytes"),
            ("routes: {e: {targets: [\"s/m\"], embed_cache: {ttl: 5}}}", "unknown key \"ttl\""),
            ("routes: {e: {targets: [\"s/m\"], cache: {}}}", "unknown key \"cache\""),
        ]
        for (i, (routes, message)) in cases.enumerated() {
            let path = "\(dir)/c\(i).yaml"
            try "providers: {s: {kind: sim, embed_cache: {ttl_s: 60}}}\n\(routes)\n".write(toFile: path, atomically: true, encoding: .utf8)
            do {
                _ = try ConfigLoader.load(path: path, environment: [:])
                Issue.record("accepted \(routes)")
            } catch {
                #expect(error.message.contains(message) && error.message.contains(path), "got: \(error.message)")
            }
        }
        let path = "\(dir)/ok.yaml"
        try "providers: {s: {kind: sim, embed_cache: {ttl_s: 60}}}\nroutes: {e: {targets: [\"s/m\"], embed_cache: {ttl_s: 5}}, f: [\"s/m\"]}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: path, environment: [:])
        #expect(c.routes == ["e": ["s/m"], "f": ["s/m"]] && c.routeEmbedCaches["e"]?.ttlS == 5 && c.providers["s"]?.embedCache?.ttlS == 60)

        let parser = JobParser(maxBytes: 4096)
        #expect(try parser.parse(Array(#"{"id":"a","model":"m","input":"x","params":{"cache":false}}"#.utf8), mode: "embed").params.cache == false)
        #expect(throws: JobRejection.self) { try parser.parse(Array(#"{"id":"a","model":"m","input":"x","params":{"cache":"no"}}"#.utf8), mode: "embed") }
        // Through the gateway, `cache` in the body (extra_body in the SDKs) is the job's params.cache, not something for the provider.
        let viaGateway = try OpenAIRequest.parse(Array(#"{"model":"m","input":["x"],"cache":false,"dimensions":8}"#.utf8), kind: .embedding, id: "g")
        #expect(viaGateway.job["params"]?.objectValue?["cache"] == .bool(false), "\(viaGateway.job)")
        #expect(viaGateway.job["params"]?.objectValue?["extra"]?.objectValue?.keys.sorted() == ["dimensions"], "\(viaGateway.job)")
    }
}
