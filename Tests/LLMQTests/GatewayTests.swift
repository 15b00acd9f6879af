import Foundation
import LLMQ
import LLMQTestSupport
import Testing

@testable import LLMQGateway

/// `llmq gateway` as a real process in front of a real farm, driven by the official `openai`
/// Python package and by headless Chromium (the scripts in Tests/GatewayClients).
@Suite(.serialized) struct GatewayTests {
    /// A farm and a gateway in their own world; the gateway's bound port read from its log.
    struct Stack {
        let env: TestEnvironment
        let url: String

        init(_ name: String) async throws {
            let env = try TestEnvironment(name)
            self.env = env
            let keys = "\(env.dir)/keys.txt"
            // One key stored hashed, as an operator would write it.
            try """
                # KEY TENANT [MAX_CONCURRENT]
                \(APIKeys.digest("test-key")) acme
                slow-key solo 1
                team-key team 3
                """.write(toFile: keys, atomically: true, encoding: .utf8)
            let config = try env.writeConfig(
                workers: 1, modes: ["chat": 48, "complete": 8, "embed": 4],
                routes: [
                    "fast": ["sim/sim-1:tokens=12,delay_ms=2"], "emb": ["sim/sim-embed-1:dim=8"],
                    "demo": ["sim/sim-1:tokens=80,delay_ms=50,first_ms=100"],
                ],
                extra: """
                    gateway:
                      keys_file: \(keys)
                      max_waiting: {chat: 6, complete: 2}
                      sample_interval_s: 0.1

                    """)
            _ = try env.start(["farm", "--config", config])
            let gateway = try env.start(["gateway", "--config", config, "--port", "0", "--host", "127.0.0.1"], log: "gateway.log")
            var found: String?
            try env.until("the gateway to listen", timeout: 60) {
                if let s = gateway.exitStatus { throw TestFailure("llmq gateway exited (\(ChildProcess.describe(s))): \(env.log("gateway.log"))") }
                found = env.log("gateway.log").split(separator: "\n").first { $0.hasPrefix("llmq gateway listening on ") }
                    .map { String($0.dropFirst("llmq gateway listening on ".count)) }
                return found != nil
            }
            url = found!
        }

        /// Runs one of Tests/GatewayClients/*.py and returns its exit code and output.
        func python(_ script: String, _ args: [String], modules: [String], timeout: Double = 180) throws -> (Int32?, String) {
            let probe = "import " + modules.joined(separator: ", ")
            let python = ["python3", "/usr/local/bin/python3", "/usr/bin/python3"].compactMap(ChildProcess.which).first { p in
                guard let c = try? ChildProcess([p, "-c", probe]) else { return false }
                while c.exitStatus == nil { usleep(5000) }
                return ChildProcess.exitCode(c.exitStatus!) == 0
            }
            guard let python else {
                throw TestFailure("no python3 with \(modules.joined(separator: ", ")); `make pydeps` installs them (pip install openai websockets)")
            }
            let out = "\(env.dir)/\(script).out"
            let p = try ChildProcess([python, "\(TestEnvironment.packageRoot)/Tests/GatewayClients/\(script)"] + args, stdout: out, stderr: out)
            let end = Date().addingTimeInterval(timeout)
            while p.exitStatus == nil && Date() < end { usleep(10_000) }
            guard let s = p.exitStatus else {
                p.signal(SIGKILL)
                throw TestFailure("\(script) did not finish within \(timeout) s: \((try? String(contentsOfFile: out, encoding: .utf8)) ?? "")")
            }
            return (ChildProcess.exitCode(s), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
        }
    }

    /// Every check of openai_client.py; then every gateway metric the dashboard and README name
    /// is in the real scrape, and /readyz answers ready.
    @Test func openAISDKAgainstTheGateway() async throws {
        let stack = try await Stack("gateway-sdk")
        let port = Int(stack.url.split(separator: ":").last!)!
        let (code, out) = try stack.python(
            "openai_client.py", [stack.url, "test-key", "http://127.0.0.1:\(stack.env.simPort)", String(stack.env.redis.port), stack.env.prefix], modules: ["openai"])
        #expect(code == 0 && out.contains("ALL OK"), "\(out)\n--- gateway log ---\n\(stack.env.log("gateway.log").suffix(3000))")
        guard let scrape = HTTPProbe.get(port: port, path: "/metrics"), scrape.status == 200 else { throw TestFailure("no /metrics on the gateway") }
        let families = Set(scrape.body.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
        let dashboard = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/Ops/grafana/llmq-dashboard.json", encoding: .utf8)
        let used = Set(dashboard.matches(of: /llmq_gateway_[a-z_]+/).map { String($0.output).replacing(/_(bucket|sum|count)$/, with: "") })
        #expect(!used.isEmpty && used.isSubset(of: families), "dashboard uses \(used.subtracting(families)) which the scrape lacks")
        let readme = try String(contentsOfFile: "\(TestEnvironment.packageRoot)/README.md", encoding: .utf8)
        let undocumented = GatewayMetrics.families.map(\.name).filter { !readme.contains("`\($0)") }
        #expect(undocumented.isEmpty, "README lacks \(undocumented)")
        #expect(Set(GatewayMetrics.families.map(\.name)).isSubset(of: families), "scrape lacks \(Set(GatewayMetrics.families.map(\.name)).subtracting(families))")
        #expect(HTTPProbe.get(port: port, path: "/readyz")?.status == 200)
    }

    @Test func tenantLimitAndAdmissionUnderLoad() async throws {
        let stack = try await Stack("gateway-load")
        let (code, out) = try stack.python("load_limits.py", [stack.url, "test-key", "team-key"], modules: ["openai"])
        #expect(code == 0 && out.contains("ALL OK"), "\(out)\n--- gateway log ---\n\(stack.env.log("gateway.log").suffix(3000))")
    }

    @Test func browserStreamsAndResumesAfterReload() async throws {
        guard ChildProcess.which("chromium") != nil || ChildProcess.which("chromium-browser") != nil else {
            throw TestFailure("chromium is not installed; `apt-get install chromium` (make testdeps does) — the browser test needs it")
        }
        let stack = try await Stack("gateway-browser")
        let shot = "\(TestEnvironment.packageRoot)/.build/gateway-browser.png"
        let (code, out) = try stack.python("browser.py", [stack.url, shot, "test-key"], modules: ["websockets"])
        #expect(code == 0 && out.contains("ALL OK"), "\(out)\n--- gateway log ---\n\(stack.env.log("gateway.log").suffix(3000))")
        #expect(FileManager.default.fileExists(atPath: shot), "no screenshot at \(shot)")
    }

    /// A worker lost mid-answer: the next attempt's text is checked against what was sent, only the rest goes out.
    @Test func aRestartedAttemptDoesNotRepeatText() {
        func text(_ out: [UInt8]) -> String { String(decoding: out, as: UTF8.self) }
        var s = Streamer(encoder: OpenAIEncoder(kind: .chat, id: "x", model: "m"), includeUsage: false)
        #expect(text(s.encode(.chunk(escapedText: Array("Hello ".utf8)))).contains(#""content":"Hello ""#))
        #expect(text(s.encode(.chunk(escapedText: Array("wor".utf8)))).contains(#""content":"wor""#))
        #expect(s.encode(.retry).isEmpty)
        #expect(s.encode(.start).isEmpty)
        #expect(s.encode(.chunk(escapedText: Array("Hello".utf8))).isEmpty)
        #expect(text(s.encode(.chunk(escapedText: Array(" world".utf8)))).contains(#""content":"ld""#))
        #expect(text(s.encode(.done(finishReason: "stop", promptTokens: 1, completionTokens: 2))).hasSuffix("data: [DONE]\n\n"))
        var d = Streamer(encoder: OpenAIEncoder(kind: .chat, id: "x", model: "m"), includeUsage: false)
        _ = d.encode(.chunk(escapedText: Array("Hello".utf8)))
        _ = d.encode(.retry)
        #expect(text(d.encode(.chunk(escapedText: Array("Bye".utf8)))).contains("worker_lost"))
        #expect(d.stopped)
    }

    @Test func sha256MatchesKnownDigests() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array(String(repeating: "a", count: 1000).utf8)
        #expect(SHA256.hex(long) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func keysFileParsesAndRejects() throws {
        var keys = APIKeys()
        try keys.add(text: "k1 acme\n\(APIKeys.digest("k2")) beta 4 # comment\n", source: "test")
        #expect(keys.lookup(key: "k1") == .init(tenant: "acme", maxConcurrent: nil))
        #expect(keys.lookup(key: "k2") == .init(tenant: "beta", maxConcurrent: 4))
        #expect(keys.lookup(key: "k3") == nil)
        #expect(throws: LLMQError.self) { try keys.add(text: "only-a-key", source: "test") }
    }

    @Test func gatewaySectionOfTheConfiguration() throws {
        let dir = NSTemporaryDirectory() + "llmq-gwcfg-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "gateway:\n  port: 9000\n  max_waiting: {chat: 5}\n  tenant_concurrency: 2\n".write(toFile: "\(dir)/a.yaml", atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: "\(dir)/a.yaml", environment: [:])
        #expect(c.gateway.port == 9000 && c.gateway.waitingLimit("chat") == 5 && c.gateway.waitingLimit("embed") == 10000 && c.gateway.tenantConcurrency == 2)
        try "gateway:\n  prot: 9000\n".write(toFile: "\(dir)/b.yaml", atomically: true, encoding: .utf8)
        #expect(throws: LLMQError.self) { try ConfigLoader.load(path: "\(dir)/b.yaml", environment: [:]) }
    }
}
