import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// The parser's edges: numbers at and past every range, duplicate keys, control
/// characters, oversized jobs answered from their first 4 KiB. No Redis needed.
@Suite struct HostileJobParserTests {
    let parser = JobParser(maxBytes: 65536)

    func job(_ extra: String, mode: Mode = "chat") -> String {
        #"{"id":"h-1","model":"sim/m","messages":[{"role":"user","content":"x"}]\#(extra)}"#
    }

    func outcome(_ text: String, mode: Mode = "chat") -> Result<Job, JobRejection> {
        parser.outcome(Array(text.utf8), mode: mode)
    }

    func rejection(_ text: String) -> JobRejection? {
        if case .failure(let r) = outcome(text) { return r }
        return nil
    }

    static let edgeNumbers = ["-0", "-0.0", "0", "1e308", "-1e308", "1e400", "-1e400", "9223372036854775808", "-9223372036854775808",
                              "18446744073709551616", "1e300", "-1", "1e11", "123456789012345678901234567890", "0.5", "2.5e-324"]

    @Test(arguments: ["timeout_s", "deadline", "max_attempts", "attempts", "not_before"])
    func topLevelNumbersAtTheEdgesNeverTrap(_ key: String) throws {
        for n in Self.edgeNumbers {
            switch outcome(job(",\"\(key)\":\(n)")) {
            case .success(let j):
                // Whatever passes is finite and inside the documented range.
                for v in [j.timeoutS, j.deadline, j.notBefore].compactMap({ $0 }) { #expect(v.isFinite && v >= 0 && v <= 1e10, "\(key)=\(n)") }
                if let t = j.timeoutS { #expect(t > 0 && t <= 86_400) }
                if let m = j.maxAttempts { #expect((1...100).contains(m)) }
                #expect((0...10_000).contains(j.attempts))
            case .failure(let r):
                #expect(r.error.code == .invalidJob)
                #expect(r.id == "h-1", "the id is readable, so the producer must hear why: \(r.error.message)")
                #expect(r.error.message.contains(key), "\(key)=\(n): \(r.error.message)")
            }
        }
    }

    @Test(arguments: ["max_tokens", "temperature", "top_p", "seed"])
    func paramNumbersAtTheEdgesNeverTrap(_ key: String) throws {
        for n in Self.edgeNumbers {
            switch outcome(job(",\"params\":{\"\(key)\":\(n)}")) {
            case .success(let j):
                if let t = j.params.temperature { #expect(t.isFinite && (0...10).contains(t)) }
                if let p = j.params.topP { #expect((0...1).contains(p)) }
                if let m = j.params.maxTokens { #expect(m >= 1 && m <= 16_777_216) }
                if let s = j.params.seed { #expect(abs(s) <= 1 << 53) }
            case .failure(let r):
                #expect(r.error.code == .invalidJob && r.id == "h-1")
                #expect(r.error.message.contains("params.\(key)"), "\(key)=\(n): \(r.error.message)")
            }
        }
    }

    @Test func rangesAreTheDocumentedOnes() throws {
        #expect(rejection(job(#","timeout_s":1e11"#))?.error.message.contains("greater than 0 and at most 86400 seconds") == true)
        #expect(rejection(job(#","timeout_s":-0"#)) != nil)
        #expect(try outcome(job(#","timeout_s":86400"#)).get().timeoutS == 86_400)
        #expect(rejection(job(#","deadline":1764000000000"#))?.error.message.contains("milliseconds") == true)
        #expect(try outcome(job(#","not_before":1764000000.5"#)).get().notBefore == 1_764_000_000.5)
        #expect(rejection(job(#","max_attempts":0"#)) != nil)
        #expect(rejection(job(#","max_attempts":101"#)) != nil)
        #expect(try outcome(job(#","max_attempts":3.0"#)).get().maxAttempts == 3)
        #expect(rejection(job(#","attempts":-1"#)) != nil)
        #expect(rejection(job(#","params":{"seed":9007199254740993}"#)) != nil)
        #expect(try outcome(job(#","params":{"seed":-42,"temperature":0,"top_p":1}"#)).get().params.seed == -42)
        #expect(rejection(job(#","timeout_s":"60""#))?.error.message.contains("got \"60\"") == true)
        #expect(rejection(job(#","timeout_s":1e400"#))?.error.message.contains("too large") == true)
    }

    @Test func newFieldsOfProtocol11() throws {
        let j = try outcome(job(#","tenant":"acme-1","priority":"high","not_before":1700000000,"attempts":2"#)).get()
        #expect(j.tenant == "acme-1" && j.priority == .high && j.notBefore == 1_700_000_000 && j.attempts == 2)
        #expect(try outcome(job("")).get().priority == .normal)
        #expect(Job.topLevelKeys.isSuperset(of: ["not_before", "tenant", "priority", "attempts"]))
        for bad in [#""tenant":"""#, #""tenant":"a b""#, #""tenant":7"#, "\"tenant\":\"\(String(repeating: "t", count: 65))\"",
                    #""priority":"urgent""#, #""priority":1"#, #""not_before":-1"#, #""not_before":null"#] {
            let r = try #require(rejection(job("," + bad)), "accepted \(bad)")
            #expect(r.id == "h-1" && r.error.code == .invalidJob)
        }
    }

    @Test func traceparentIsValidated() throws {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        #expect(try outcome(job(",\"traceparent\":\"\(good)\"")).get().traceparent == good)
        for bad in ["\(good)\\r\\nX-Injected: 1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0\\u0000", "hello", "",
                    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-\\r\\nX-Injected: 1",
                    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01- x"] {
            let r = try #require(rejection(job(",\"traceparent\":\"\(bad)\"")), "accepted \(bad)")
            #expect(r.error.message.contains("traceparent") && r.id == "h-1")
        }
        #expect(rejection(job(#","traceparent":17"#)) != nil)
        // A later version's extra fields pass when they are hex and dashes.
        #expect(try outcome(job(#","traceparent":"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-beef""#)).get().traceparent != nil)
    }

    @Test func duplicateKeysAreRefused() throws {
        let r = try #require(rejection(job(#","timeout_s":5,"timeout_s":6"#)))
        #expect(r.id == "h-1" && r.error.message.contains("\"timeout_s\" appears twice"))
        #expect(rejection(job(#","params":{"seed":1,"seed":2}"#))?.error.message.contains("\"seed\"") == true)
        // Keys equal once unescaped are the same key.
        #expect(rejection(job(#","metadata":{"a":1,"\u0061":2}"#)) != nil)
        // Two ids: which one is meant cannot be known, so no channel hears about it.
        let twoIDs = #"{"id":"a-1","id":"a-2","model":"m","prompt":"x"}"#
        #expect(rejection(twoIDs)?.id == nil)
        #expect(JobParser.peekID(Array(twoIDs.utf8)) == nil)
    }

    @Test func controlCharactersInStrings() throws {
        // Where a string reaches a header, URL, log line or label, control characters are refused...
        for field in [#""model":"sim/m\r\nX: 1""#, #""model":"sim/m\u0000""#] {
            let text = #"{"id":"c-1",\#(field),"messages":[{"role":"user","content":"x"}]}"#
            #expect(rejection(text)?.error.message.contains("control characters") == true, "\(field)")
        }
        #expect(rejection(#"{"id":"c\r\n1","model":"m","prompt":"x"}"#)?.id == nil)
        // ...and where it is only passed on JSON-escaped, it is kept as given.
        let j = try outcome(#"{"id":"c-2","model":"m","messages":[{"role":"user","content":"a\u0000b\r\nc"}],"metadata":{"k":"\r\n"},"params":{"stop":["\n"]}}"#).get()
        #expect(j.messages.first?["content"]?.stringValue == "a\u{0}b\r\nc")
        // Raw (unescaped) control characters are not JSON at all; the id is still read from the prefix.
        let raw = Array(#"{"id":"c-3","model":"m","prompt":"a"#.utf8) + [0x0A, 0x00] + Array(#""}"#.utf8)
        #expect(throws: JobRejection.self) { try parser.parse(raw, mode: "complete") }
        #expect((try? parser.parse(raw, mode: "complete")) == nil)
        #expect(JobParser.peekID(raw) == "c-3")
    }

    @Test func deepNestingAndInvalidUTF8AreClearRejections() throws {
        for depth in [127, 128, 129, 5000, 100_000] {
            let text = #"{"id":"d-1","model":"m","prompt":"x","metadata":{"a":"# + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}}"
            let r = JobParser(maxBytes: 1 << 20).parse
            do {
                _ = try r(Array(text.utf8), "complete")
                #expect(depth < 127, "accepted \(depth) levels")
            } catch {
                #expect(error.error.code == .invalidJob && error.id == "d-1")
            }
        }
        for bad: [UInt8] in [[0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]] {
            let raw = Array(#"{"id":"u-1","model":"m","prompt":""#.utf8) + bad + Array(#""}"#.utf8)
            do {
                _ = try parser.parse(raw, mode: "complete")
                Issue.record("accepted invalid UTF-8 \(bad)")
            } catch {
                #expect(error.id == "u-1" && error.error.message.contains("not valid JSON"))
            }
        }
    }

    @Test func oversizedJobsAreAnsweredFromTheirFirst4KiB() throws {
        let small = JobParser(maxBytes: 4096)
        let big = #"{"id":"big-1","model":"m","prompt":""# + String(repeating: "x", count: 2_000_000) + #""}"#
        var rejection: JobRejection?
        do { _ = try small.parse(Array(big.utf8), mode: "complete") } catch { rejection = error }
        let r = try #require(rejection)
        #expect(r.id == "big-1")
        #expect(r.error.message.contains("2000038 bytes") && r.error.message.contains("limit of 4096 bytes"), "\(r.error.message)")
        // An id beyond the first 4 KiB is not looked for.
        let late = #"{"prompt":""# + String(repeating: "x", count: 5000) + #"","id":"late-1"}"#
        #expect(JobParser.peekID(Array(late.utf8)) == nil)
    }

    @Test func peekIDReadsTopLevelIDsOnly() {
        func peek(_ s: String) -> String? { JobParser.peekID(Array(s.utf8)) }
        #expect(peek(#"  {"id":"p-1","model":"m"}"#) == "p-1")
        #expect(peek(#"{"model":"m","messages":[{"id":"nested"}],"id":"p-2","#) == "p-2")
        #expect(peek(#"{"messages":[{"id":"nested"}],"model":"m"}"#) == nil)
        #expect(peek(#"{"metadata":{"id":"nested"},broken"#) == nil)
        #expect(peek(#"{"id":"p-3","model":"m",garbage"#) == "p-3")
        #expect(peek(#"{"id":"p-4"#) == nil)
        #expect(peek(#"{"id":"bad id"}"#) == nil)
        #expect(peek(#"{"id":7}"#) == nil)
        #expect(peek(#"{"\u0069d":"p-5"}"#) == "p-5")
        #expect(peek(#"["id","x"]"#) == nil)
        #expect(peek("") == nil)
        // Truncation at every byte of a valid job: the id is read once it is complete, and never a wrong one.
        let full = Array(#"{"model":"m","id":"t-1","prompt":"hello"}"#.utf8)
        let idEnd = full.count - #","prompt":"hello"}"#.utf8.count
        for n in 0...full.count {
            let got = JobParser.peekID(Array(full.prefix(n)))
            #expect(got == (n >= idEnd ? "t-1" : nil), "prefix \(n): \(got ?? "nil")")
        }
    }

    @Test func scannerIntegersNeverTrap() {
        func int(_ s: String) -> Int? {
            Array(s.utf8).withUnsafeBufferPointer { b in
                let sc = JSONScanner(b)
                return sc.validate().flatMap { sc.int($0) }
            }
        }
        #expect(int("-9223372036854775808") == Int.min)
        #expect(int("9223372036854775807") == Int.max)
        #expect(int("9223372036854775808") == nil)
        #expect(int("-9223372036854775809") == nil)
        #expect(int("18446744073709551616") == nil)
        #expect(int("1e300") == nil && int("-1e300") == nil && int("1e400") == nil)
        #expect(int("3e2") == 300 && int("-0") == 0 && int("2.5") == nil && int("4.0") == 4)
        #expect(int("99999999999999999999999999999999999999") == nil)
        #expect(int("1e99999999999999999999") == nil && int("-1e-99999999999999999999") == 0)
        #expect(int(String(repeating: "9", count: 10_000)) == nil)
        // The same monsters as job fields: refused with the field's name, never a trap.
        for n in ["1e99999999999999999999", String(repeating: "9", count: 10_000), "-" + String(repeating: "1", count: 400) + ".5e-3"] {
            #expect(rejection(job(",\"timeout_s\":\(n)"))?.error.message.contains("timeout_s") == true)
            #expect(rejection(job(",\"params\":{\"seed\":\(n)}"))?.error.message.contains("params.seed") == true)
        }
        let v = try? JSONValue.parse(Array("[1e400,-1e400,9223372036854775808,-0]".utf8))
        #expect(v?.arrayValue?.map(\.intValue) == [nil, nil, nil, 0])
    }
}

@Suite struct DeadLetterTests {
    @Test func sha256TestVectors() {
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Fed in odd pieces, the digest is the same.
        var h = SHA256()
        let text = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        let long = [UInt8]((0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        for (a, b) in [(0, 1), (1, 63), (63, 64), (64, 200), (200, 300)] { h.update(long[a..<b]) }
        #expect(h.finalize() == SHA256.hash(long))
        #expect(SHA256.hash(text).count == 32)
    }

    @Test func entriesKeepAPrefixTheSizeAndTheHash() throws {
        let err = LLMQError.invalidJob("the job is not valid JSON")
        let small = Array(#"{"id":"s-1","model":"m"}"#.utf8)
        let e1 = try #require(JSONValue.parse(DeadLetter.entry(raw: small, id: "s-1", error: err, attempt: 1, worker: "w-0", now: 1_700_000_000.1234)).objectValue)
        #expect(e1["job"]?.stringValue == String(decoding: small, as: UTF8.self))
        #expect(e1["job_truncated"] == false && e1["job_bytes"]?.intValue == small.count)
        #expect(e1["job_sha256"]?.stringValue == SHA256.hex(small))
        #expect(e1["code"] == "invalid_job" && e1["worker"] == "w-0" && e1["attempt"] == 1 && e1["id"] == "s-1" && e1["at"]?.doubleValue == 1_700_000_000.123)

        // Control characters would grow six-fold escaped: the entry stays bounded anyway.
        let hostile = [UInt8](repeating: 0x01, count: 2_000_000)
        let entry = DeadLetter.entry(raw: hostile, id: nil, error: err, attempt: 0, worker: "w-0", now: .nan)
        #expect(entry.count < DeadLetter.prefixBytes * 6 + 1024)
        let e2 = try #require(JSONValue.parse(entry).objectValue)
        #expect(e2["job_truncated"] == true && e2["job_bytes"]?.intValue == 2_000_000 && e2["id"] == nil)
        #expect(e2["attempt"] == 1 && (e2["at"]?.doubleValue ?? 0) > 0)

        // A prefix of UTF-8 text is cut between characters, not inside one.
        let accents = Array(String(repeating: "é", count: DeadLetter.prefixBytes).utf8)
        let e3 = try #require(JSONValue.parse(DeadLetter.entry(raw: accents, id: "a-1", error: err, attempt: 1, worker: "w", now: 1)).objectValue)
        #expect(e3["job"]?.stringValue?.utf8.count == DeadLetter.prefixBytes && e3["job_truncated"] == true)

        // Not UTF-8: base64 of the prefix.
        let binary: [UInt8] = [0xFF, 0xFE] + [UInt8](repeating: 0x41, count: DeadLetter.prefixBytes)
        let e4 = try #require(JSONValue.parse(DeadLetter.entry(raw: binary, id: nil, error: err, attempt: 2, worker: "w", now: 1)).objectValue)
        let b64 = try #require(e4["job_base64"]?.stringValue)
        #expect(Data(base64Encoded: b64)?.count == DeadLetter.prefixBytes && e4["job"] == nil && e4["job_truncated"] == true)
    }

    @Test func entriesMatchTheSchema() throws {
        let err = LLMQError(.workerLost, "lost")
        let lines = [
            DeadLetter.entry(raw: Array(#"{"id":"x-1"}"#.utf8), id: "x-1", error: err, attempt: 3, worker: "w", now: 1_700_000_000),
            DeadLetter.entry(raw: [0xFF, 0x00], id: nil, error: .invalidJob("bad"), attempt: 1, worker: "w", now: 1_700_000_000),
            DeadLetter.entry(raw: [UInt8](repeating: 0x22, count: 40_000), id: nil, error: .invalidJob("bad"), attempt: 1, worker: "w", now: 1_700_000_000),
        ].map { String(decoding: $0, as: UTF8.self) }
        try SchemaCheck.validate("dead", lines)
    }
}

@Suite struct BoundedLabelTests {
    @Test func modelLabelsNameOnlyConfiguredModels() throws {
        var c = FarmConfig()
        c.providers = ["sim": ProviderConfig(kind: "sim", baseURL: "http://127.0.0.1:1/v1"), "az": ProviderConfig(kind: "azure")]
        c.providers["az"]?.deployment = "prod-4o"
        c.routes = ["fast": ["sim/fast-model", "az/gpt-4o"]]
        let labels = ModelLabels(config: c)
        #expect(labels.label(provider: "sim", model: "fast-model") == "fast-model")
        #expect(labels.label(provider: "sim", model: "fast") == "fast")
        #expect(labels.label(provider: "az", model: "gpt-4o") == "gpt-4o")
        #expect(labels.label(provider: "az", model: "prod-4o") == "prod-4o")
        #expect(labels.label(provider: "sim", model: "gpt-4o") == "other")
        #expect(labels.label(provider: "sim", model: "anything-\(UUID())") == "other")
    }

    @Test func terminalLinesByTopLevelTypeOnly() {
        #expect(RequestWatcher.isTerminal(#"{"type":"done","id":"a","seq":3}"#))
        #expect(RequestWatcher.isTerminal(#"{"id":"a","seq":0,"type":"error","code":"internal"}"#))
        #expect(!RequestWatcher.isTerminal(#"{"type":"start","id":"a","seq":0,"metadata":{"type":"done"}}"#))
        #expect(!RequestWatcher.isTerminal(#"{"type":"chunk","id":"a","seq":1,"text":"\"type\":\"error\""}"#))
        #expect(!RequestWatcher.isTerminal(#"not json "type":"done""#))
    }

    @Test(arguments: [
        ("retry_base_s: -1", "retry_base_s must be a number from"),
        ("retry_base_s: .nan", "retry_base_s must be"),
        ("retry_max_s: 0.1\nretry_base_s: 1", "retry_max_s must be at least retry_base_s"),
        ("result_ttl_s: 0", "result_ttl_s must be from 1"),
        ("log_ttl_s: -5", "log_ttl_s must be from 1"),
        ("modes: {chat: {concurrency: 1000000}}", "modes.chat.concurrency must be from 1 to 10000"),
        ("max_job_bytes: 0", "max_job_bytes must be from"),
        ("max_output_bytes: -1", "max_output_bytes must be from"),
        ("max_attempts: 1000", "max_attempts must be from 1 to 100"),
        ("drain_timeout_s: .inf", "drain_timeout_s must be"),
        ("restart_backoff_s: 0", "restart_backoff_s must be"),
        ("delayed_batch: 0", "delayed_batch must be from 1 to 10000"),
        ("lease_ttl_s: 0.5", "lease_ttl_s must be a number from 1 to 300"),
        ("http_threads: 0", "http_threads must be from 1 to 16"),
        ("tracing: {timeout_s: .inf}", "tracing.timeout_s must be"),
        ("providers: {o: {kind: ollama, timeout_s: -1}}", "providers.o.timeout_s must be"),
        ("providers: {o: {kind: ollama, connect_timeout_s: .nan}}", "providers.o.connect_timeout_s must be"),
        ("providers: {o: {kind: ollama, cooldown_s: -1}}", "providers.o.cooldown_s must be"),
        ("providers: {o: {kind: ollama, max_tokens: 0}}", "providers.o.max_tokens must be from 1"),
    ])
    func configurationRangesNameTheKeyAndTheFile(_ text: String, message: String) throws {
        let path = NSTemporaryDirectory() + "llmq-range-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try ConfigLoader.load(path: path, environment: [:])
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(message) && error.message.contains(path), "got: \(error.message)")
        }
    }

    @Test func newSettingsHaveDefaultsAndAreRead() throws {
        #expect(FarmConfig().delayedBatch == 100 && FarmConfig().leaseTTLS == 5 && FarmConfig().httpThreads == 1)
        let path = NSTemporaryDirectory() + "llmq-range-\(UUID().uuidString).yaml"
        try "delayed_batch: 500\nlease_ttl_s: 12.5\nhttp_threads: 2\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = try ConfigLoader.load(path: path, environment: [:])
        #expect(c.delayedBatch == 500 && c.leaseTTLS == 12.5 && c.httpThreads == 2)
    }
}

/// Dead entries as `llmq dead retry` sees them, on a real redis-server.
@Suite struct DeadRetryTests {
    @Test func retryPushesWholeJobsBackAndSkipsTruncatedOnes() throws {
        let env = try TestEnvironment("dead-retry")
        let keys = Keys(prefix: env.prefix)
        let redis = try env.client()
        let whole = Array(#"{"id":"dr-1","model":"fast","messages":[{"role":"user","content":"x"}],"attempts":2}"#.utf8)
        let big = Array((#"{"id":"dr-2","model":"fast","prompt":""# + String(repeating: "y", count: DeadLetter.prefixBytes) + #""}"#).utf8)
        for (raw, id) in [(whole, "dr-1"), (big, "dr-2")] {
            let entry = DeadLetter.entry(raw: raw, id: id, error: LLMQError(.workerLost, "lost"), attempt: 3, worker: "w-0", now: 1_700_000_000)
            _ = try redis.run(bytes: [Array("LPUSH".utf8), Array(keys.dead("chat").utf8), entry])
        }
        let inspector = try FarmInspector(url: env.redis.url, keys: keys)
        let entries = try inspector.deadEntries(mode: "chat")
        let truncated = try #require(entries.first { $0.id == "dr-2" })
        guard case .skipped(let why) = try inspector.retry(truncated) else {
            Issue.record("a truncated entry was pushed back")
            return
        }
        #expect(why.contains("first \(DeadLetter.prefixBytes) bytes") && why.contains("\(big.count) bytes") && why.contains(SHA256.hex(big)), "\(why)")
        #expect(try inspector.retry(#require(entries.first { $0.id == "dr-1" })) == .queued)
        let queued = try #require(try redis.run("LRANGE", keys.queue("chat"), "0", "-1").array?.first?.string)
        let job = try #require(try JSONValue.parse(Array(queued.utf8)).objectValue)
        #expect(job["id"] == "dr-1" && job["attempts"] == nil, "the retried job starts over: \(queued)")
        #expect(try redis.run("LLEN", keys.dead("chat")).int == 1)
    }
}
