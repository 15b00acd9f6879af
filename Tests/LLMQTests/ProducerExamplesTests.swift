import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// The producers of Ops/clients, each run as its own process (its own interpreter and Redis
/// client) against a real farm: the text it printed must be the request's whole answer, its
/// last line the terminal event, its exit code 0 on `done` and 1 on `error`.
@Suite(.serialized) struct ProducerExamplesTests {
    enum Language: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case python, go, ruby, shell, node
        var testDescription: String { rawValue }
        /// What each example puts before its random job id.
        var idPrefix: String { ["python": "py-", "go": "go-", "ruby": "rb-", "shell": "sh-", "node": "js-"][rawValue]! }
    }

    /// A farm (and, for Node, a gateway in front of it) in a world of its own.
    struct Stack {
        let env: TestEnvironment
        let gatewayURL: String?
        static let clients = "\(TestEnvironment.packageRoot)/Ops/clients"

        init(_ language: Language) throws {
            let env = try TestEnvironment("producer-\(language.rawValue)")
            self.env = env
            let keys = "\(env.dir)/keys.txt"
            try "example-key examples\n".write(toFile: keys, atomically: true, encoding: .utf8)
            // Tokens come fast and from the first moment, so a producer that subscribed late loses some.
            let config = try env.writeConfig(
                routes: [
                    "fast": ["sim/sim-1:tokens=40,delay_ms=2"], "broken": ["sim/sim-1:fault=400"],
                    "slow": ["sim/sim-1:tokens=30,delay_ms=150"],
                ],
                extra: "gateway:\n  keys_file: \(keys)\n")
            _ = try env.start(["farm", "--config", config])
            guard language == .node else {
                gatewayURL = nil
                return
            }
            let gateway = try env.start(["gateway", "--config", config, "--port", "0", "--host", "127.0.0.1"], log: "gateway.log")
            var found: String?
            try env.until("the gateway to listen", timeout: 60) {
                if let s = gateway.exitStatus { throw TestFailure("llmq gateway exited (\(ChildProcess.describe(s))): \(env.log("gateway.log"))") }
                found = env.log("gateway.log").split(separator: "\n").first { $0.hasPrefix("llmq gateway listening on ") }
                    .map { String($0.dropFirst("llmq gateway listening on ".count)) }
                return found != nil
            }
            gatewayURL = found
        }

        /// The command that runs the example, after checking its interpreter and client library are
        /// installed (a missing one fails the test with the package to install).
        func command(_ language: Language) throws -> [String] {
            func require(_ program: String, _ package: String) throws -> String {
                guard let path = ChildProcess.which(program) else {
                    throw TestFailure("\(program) is not installed; `apt-get install \(package)` (make testdeps does) — ProducerExamplesTests runs the \(language.rawValue) example with it")
                }
                return path
            }
            func succeeds(_ argv: [String], environment: [String: String]? = nil) throws -> Bool {
                let p = try ChildProcess(argv, environment: environment, stdout: "/dev/null", stderr: "/dev/null")
                let end = Date().addingTimeInterval(120)
                while p.exitStatus == nil && Date() < end { usleep(10_000) }
                guard let s = p.exitStatus else {
                    p.signal(SIGKILL)
                    throw TestFailure("\(argv.joined(separator: " ")) did not finish within 120 s")
                }
                return ChildProcess.exitCode(s) == 0
            }
            switch language {
            case .python:
                // redis-py from Debian (python3-redis) lives beside /usr/bin/python3, which need not be first on PATH.
                let candidates = ["python3", "/usr/bin/python3"].compactMap(ChildProcess.which)
                guard let python = try candidates.first(where: { try succeeds([$0, "-c", "import redis"]) }) else {
                    throw TestFailure("no python3 that imports redis (tried \(candidates)); `apt-get install python3-redis` (make testdeps does)")
                }
                return [python, "\(Self.clients)/python/producer.py"]
            case .go:
                let go = try require("go", "golang-go")
                guard FileManager.default.fileExists(atPath: "/usr/share/gocode/src/github.com/gomodule/redigo/redis") else {
                    throw TestFailure("redigo is not in /usr/share/gocode; `apt-get install golang-github-gomodule-redigo-dev` (make testdeps does)")
                }
                let binary = "\(env.dir)/go-producer"
                let out = "\(env.dir)/go-build.log"
                let build = try ChildProcess([go, "build", "-o", binary, "\(Self.clients)/go/producer.go"], environment: goEnvironment, stdout: out, stderr: out)
                let end = Date().addingTimeInterval(300)
                while build.exitStatus == nil && Date() < end { usleep(20_000) }
                guard let s = build.exitStatus, ChildProcess.exitCode(s) == 0 else {
                    build.signal(SIGKILL)
                    throw TestFailure("go build of the Go example failed: \(env.log("go-build.log"))")
                }
                return [binary]
            case .ruby:
                let ruby = try require("ruby", "ruby")
                guard try succeeds([ruby, "-e", "require 'redis'"]) else {
                    throw TestFailure("ruby cannot load redis; `apt-get install ruby-redis` (make testdeps does)")
                }
                return [ruby, "\(Self.clients)/ruby/producer.rb"]
            case .shell:
                _ = try require("redis-cli", "redis-tools")
                _ = try require("jq", "jq")
                return [try require("bash", "bash"), "\(Self.clients)/shell/producer.sh"]
            case .node:
                return [try require("node", "nodejs"), "\(Self.clients)/node/producer.mjs"]
            }
        }

        /// GOPATH mode against Debian's packaged sources; the build cache stays under .build between runs.
        var goEnvironment: [String: String] {
            var e = ProcessInfo.processInfo.environment
            e["GO111MODULE"] = "off"
            e["GOPATH"] = "/usr/share/gocode"
            e["GOFLAGS"] = ""
            e["GOCACHE"] = "\(TestEnvironment.packageRoot)/.build/go-cache"
            return e
        }

        /// Runs the example with a model and a prompt; returns its exit code, stdout and stderr.
        /// `whileRunning` is checked against the output so far until it holds, while the example still runs.
        func run(_ argv: [String], model: String, name: String, whileRunning: ((String) -> Bool)? = nil) async throws
            -> (code: Int32?, stdout: String, stderr: String)
        {
            var e = ProcessInfo.processInfo.environment
            e["LLMQ_REDIS_URL"] = env.redisURL
            e["LLMQ_PREFIX"] = env.prefix
            e["LLMQ_TIMEOUT_S"] = "60"
            e["LLMQ_GATEWAY_URL"] = gatewayURL
            e["LLMQ_API_KEY"] = "example-key"
            // The examples flush as they print; an environment that unbuffers Python for them would hide it if they did not.
            e["PYTHONUNBUFFERED"] = nil
            let out = "\(env.dir)/\(name).out"
            let err = "\(env.dir)/\(name).err"
            let p = try ChildProcess(argv + [model, "Name three rivers, \"quoted\" and with a \\ backslash."], environment: e, stdout: out, stderr: err)
            if let whileRunning {
                do {
                    try env.until("\(name): output while the example still runs", timeout: 60) {
                        guard p.exitStatus == nil else {
                            throw TestFailure("\(name) showed no text until it ended: it printed the answer all at once instead of token by token")
                        }
                        return whileRunning(env.log("\(name).out"))
                    }
                } catch {
                    p.signal(SIGKILL)
                    throw TestFailure("\(error); stdout: \(env.log("\(name).out")) stderr: \(env.log("\(name).err"))")
                }
            }
            let status: Int32
            do { status = try await env.waitExit(p, timeout: 90) } catch {
                p.signal(SIGKILL)
                throw TestFailure("\(error); stdout: \(env.log("\(name).out")) stderr: \(env.log("\(name).err"))")
            }
            return (ChildProcess.exitCode(status), env.log("\(name).out"), env.log("\(name).err"))
        }

        /// The last line of the output as an event, and the text printed before it.
        static func split(_ stdout: String) -> (text: String, terminal: Event?) {
            var lines = stdout.split(separator: "\n", omittingEmptySubsequences: false)
            if lines.last == "" { lines.removeLast() }
            guard let last = lines.popLast() else { return ("", nil) }
            let event = Event(String(last))
            // Each example ends the streamed text with a newline before the terminal line.
            return (lines.joined(separator: "\n"), event.fields.isEmpty ? nil : event)
        }
    }

    @Test(arguments: Language.allCases) func exampleStreamsAJobAndEndsWithItsTerminalEvent(_ language: Language) async throws {
        let stack = try Stack(language)
        let argv = try stack.command(language)

        let ok = try await stack.run(argv, model: "fast", name: "done")
        let context = "stdout:\n\(ok.stdout)\nstderr:\n\(ok.stderr)\nfarm log:\n\(stack.env.log().suffix(2000))"
        let (text, terminal) = Stack.split(ok.stdout)
        #expect(ok.code == 0, "\(context)")
        let done = try #require(terminal, "the last line is not an event; \(context)")
        #expect(done.type == "done" && done.id.hasPrefix(language.idPrefix), "\(context)")
        let result = try stack.env.client().run("GET", stack.env.key("{\(done.id)}:result")).string
        let expected = try result.flatMap { try JSONValue.parse(Array($0.utf8)).objectValue?["text"]?.stringValue }
        #expect(expected != nil && expected!.split(separator: " ").count >= 40, "no result text for \(done.id): \(result ?? "nil")")
        // Every token, in order, none missed: the example subscribed before the job existed.
        #expect(text == expected, "printed text differs from the result's; \(context)")

        // Tokens are printed as they arrive: the first words show while the answer still streams.
        let streamed = try await stack.run(argv, model: "slow", name: "slow") { $0.hasPrefix("The quick ") && !$0.contains(#""type":"done""#) }
        #expect(streamed.code == 0 && Stack.split(streamed.stdout).terminal?.type == "done", "stdout:\n\(streamed.stdout)\nstderr:\n\(streamed.stderr)")

        let failed = try await stack.run(argv, model: "broken", name: "error")
        let (_, last) = Stack.split(failed.stdout)
        #expect(failed.code == 1, "stdout:\n\(failed.stdout)\nstderr:\n\(failed.stderr)")
        #expect(last?.type == "error" && last?["code"]?.stringValue == "bad_request", "stdout:\n\(failed.stdout)\nstderr:\n\(failed.stderr)")
    }
}
