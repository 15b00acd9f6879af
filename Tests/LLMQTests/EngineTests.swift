import Foundation
import LLMQ
import LLMQTestSupport
import Testing

/// Managed local engines (`launch:`), with `llmq sim` as the engine the farm starts.
@Suite(.serialized) struct EngineTests {
    /// A provider `local` whose engine is `llmq sim` on `port`, and a route `fast` to its model sim-1.
    static func config(_ env: TestEnvironment, port: Int, launch: String = "", command: String? = nil, workers: Int = 1,
                       readyTimeout: Int = 20) throws -> String {
        let cmd = try command ?? "[\"\(TestEnvironment.binary())\", sim, --port, \"\(port)\"]"
        return try env.writeConfig(
            workers: workers, modes: ["chat": 8], routes: ["fast": ["local/sim-1"]],
            providers: "  local: {kind: sim, base_url: \"http://127.0.0.1:\(port)/v1\", timeout_s: 30, "
                + "launch: {command: \(cmd), ready_timeout_s: \(readyTimeout), grace_s: 3\(launch)}}\n")
    }

    /// Pids of the engines the farm started, in order, from its log.
    static func enginePids(_ env: TestEnvironment) -> [pid_t] {
        env.log().split(separator: "\n").compactMap { line -> pid_t? in
            guard let r = line.range(of: "[engine local] started pid ") else { return nil }
            return pid_t(line[r.upperBound...].prefix { $0.isNumber })
        }
    }

    static func alive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        // A zombie has exited; only its parent's wait is missing.
        return !(stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? true)
    }

    static func push(_ redis: PlainRedis, _ env: TestEnvironment, _ ids: [String], model: String = "fast") throws {
        for id in ids { try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: id, model: model)) }
    }

    @Test func theFarmStartsItsEngineServesJobsAndStopsItOnDrain() async throws {
        let env = try TestEnvironment("engine-start")
        let port = try FreePort.find()
        let config = try Self.config(env, port: port)
        let events = try env.collector()
        let redis = try env.client()
        // Jobs pushed before the engine answers wait for it in Redis.
        try Self.push(redis, env, ["a", "b", "c"])
        let httpPort = try FreePort.find()
        let farm = try env.start(["farm", "--config", config, "--http-port", String(httpPort)])
        let all = try events.waitForTerminal(["a", "b", "c"], timeout: 40)
        for (id, evs) in all { #expect(evs.last?.type == "done", "\(id): \(evs.map(\.raw))\n\(env.log())") }
        let pids = Self.enginePids(env)
        #expect(pids.count == 1, "one engine per farm: \(env.log())")
        let log = env.log()
        let echoed = log.split(separator: "\n").contains { $0.contains("[engine local] ") && $0.contains("listening on 127.0.0.1:\(port)") }
        #expect(echoed, "the engine's output reaches the farm's log with a prefix: \(log)")
        #expect(log.contains("[engine local] ready after"))
        let metrics = HTTPProbe.get(port: httpPort, path: "/metrics")?.body ?? ""
        #expect(metrics.contains("llmq_engine_up{provider=\"local\"} 1"), "\(metrics)")
        #expect(metrics.contains("llmq_engine_start_seconds{provider=\"local\"}"), "\(metrics)")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
        for pid in pids { #expect(!Self.alive(pid), "the drain stopped the engine \(pid)") }
        #expect(HTTPProbe.get(port: port, path: "/v1/models") == nil, "nothing answers on the engine's port after the drain")
    }

    @Test func anEngineThatAlreadyAnswersIsReusedAndLeftRunning() async throws {
        let env = try TestEnvironment("engine-reuse")
        let port = try FreePort.find()
        let existing = try env.start(["sim", "--port", String(port)], log: "own-sim.log")
        try env.until("the operator's engine to answer", timeout: 20) { HTTPProbe.get(port: port, path: "/v1/models")?.status == 200 }
        let config = try Self.config(env, port: port)
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try Self.push(redis, env, ["r1", "r2"])
        let all = try events.waitForTerminal(["r1", "r2"], timeout: 30)
        for (id, evs) in all { #expect(evs.last?.type == "done", "\(id): \(evs.map(\.raw))") }
        #expect(env.log().contains("reusing the engine that already answers"), "\(env.log())")
        #expect(Self.enginePids(env).isEmpty, "no second engine was started: \(env.log())")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
        #expect(existing.exitStatus == nil, "an engine the farm did not start outlives it")
        #expect(HTTPProbe.get(port: port, path: "/v1/models")?.status == 200)
    }

    @Test func anEngineThatDiesIsRestartedAndJobsWaitMeanwhile() async throws {
        let env = try TestEnvironment("engine-crash")
        let port = try FreePort.find()
        let config = try Self.config(env, port: port)
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try Self.push(redis, env, ["before"])
        #expect(try events.waitForTerminal(["before"], timeout: 40)["before"]?.last?.type == "done")
        let first = try #require(Self.enginePids(env).first)
        kill(first, SIGKILL)
        try env.until("the engine to be restarted", timeout: 20) { Self.enginePids(env).count == 2 }
        // Jobs pushed while it restarts wait in the delayed set, then run on the new engine.
        let ids = (0..<5).map { "after-\($0)" }
        try Self.push(redis, env, ids)
        let all = try events.waitForTerminal(ids, timeout: 40)
        for (id, evs) in all {
            #expect(evs.last?.type == "done", "\(id): \(evs.map(\.raw))")
            #expect(evs.first?["attempt"] == 1, "waiting for the engine is not an attempt: \(evs.map(\.raw))")
        }
        #expect(env.log().contains("[engine local] died (signal 9); restarting"), "\(env.log())")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
        for pid in Self.enginePids(env) { #expect(!Self.alive(pid)) }
    }

    @Test func aLazyEngineStartsForTheFirstJobAndStopsWhenIdle() async throws {
        let env = try TestEnvironment("engine-lazy")
        let port = try FreePort.find()
        let config = try Self.config(env, port: port, launch: ", lazy: true, idle_stop_s: 3")
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try env.until("the farm's worker to register", timeout: 20) { try redis.run("ZCARD", env.key("workers")).int == 1 }
        #expect(Self.enginePids(env).isEmpty, "a lazy engine waits for a job: \(env.log())")
        try Self.push(redis, env, ["lazy-1"])
        #expect(try events.waitForTerminal(["lazy-1"], timeout: 40)["lazy-1"]?.last?.type == "done")
        let first = try #require(Self.enginePids(env).first)
        try env.until("the idle engine to be stopped", timeout: 20) { !Self.alive(first) }
        #expect(env.log().contains("(idle_stop_s); stopping it"), "\(env.log())")
        // The next job starts it again.
        try Self.push(redis, env, ["lazy-2"])
        #expect(try events.waitForTerminal(["lazy-2"], timeout: 40)["lazy-2"]?.last?.type == "done")
        #expect(Self.enginePids(env).count == 2, "\(env.log())")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
        for pid in Self.enginePids(env) { #expect(!Self.alive(pid)) }
    }

    @Test func anEngineThatCannotStartEndsItsJobsUpstreamUnavailable() async throws {
        let env = try TestEnvironment("engine-fail")
        let port = try FreePort.find()
        let config = try Self.config(env, port: port, command: "[/bin/sh, -c, \"echo cannot load the model; exit 3\"]", readyTimeout: 2)
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try Self.push(redis, env, ["doomed"])
        let evs = try events.waitForTerminal(["doomed"], timeout: 30)["doomed"]!
        #expect(evs.last?.type == "error" && evs.last?["code"] == "upstream_unavailable", "\(evs.map(\.raw))")
        #expect(env.log().contains("[engine local] cannot load the model"), "\(env.log())")
        // The farm keeps running and says why.
        #expect(farm.exitStatus == nil)
        try Self.push(redis, env, ["also"])
        let also = try events.waitForTerminal(["also"], timeout: 30)["also"]!
        #expect(also.last?["code"] == "upstream_unavailable", "\(also.map(\.raw))")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
    }

    @Test func aReloadRestartsAnEngineWhoseLaunchChangedAndChangesTheWorkerCount() async throws {
        let env = try TestEnvironment("engine-reload")
        let port = try FreePort.find()
        let config = try Self.config(env, port: port, workers: 2)
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try Self.push(redis, env, ["one"])
        #expect(try events.waitForTerminal(["one"], timeout: 40)["one"]?.last?.type == "done")
        let first = try #require(Self.enginePids(env).first)
        // Same engine settings, three workers: the engine stays.
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "workers: 2", with: "workers: 3").write(toFile: config, atomically: true, encoding: .utf8)
        farm.signal(SIGHUP)
        try env.until("the first reload", timeout: 60) { env.log().contains("reload 1 done") }
        #expect(Self.enginePids(env) == [first] && Self.alive(first))
        #expect(try redis.run("ZCARD", env.key("workers")).int == 3)
        // A new variable for the engine, back to two workers: the engine is restarted, one worker retires.
        try text.replacingOccurrences(of: "grace_s: 3", with: "grace_s: 3, env: {SIM_FLAVOUR: b}").write(toFile: config, atomically: true, encoding: .utf8)
        farm.signal(SIGHUP)
        try env.until("the second reload", timeout: 60) { env.log().contains("reload 2 done") }
        #expect(Self.enginePids(env).count == 2 && !Self.alive(first), "\(env.log())")
        try env.until("the retired workers to leave", timeout: 20) { try redis.run("ZCARD", env.key("workers")).int == 2 }
        try Self.push(redis, env, ["two"])
        #expect(try events.waitForTerminal(["two"], timeout: 40)["two"]?.last?.type == "done")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
        for pid in Self.enginePids(env) { #expect(!Self.alive(pid)) }
    }

    @Test func anEngineThatStopsAnsweringIsRestarted() async throws {
        let env = try TestEnvironment("engine-hung")
        let port = try FreePort.find()
        let config = try Self.config(env, port: port)
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try Self.push(redis, env, ["before"])
        #expect(try events.waitForTerminal(["before"], timeout: 40)["before"]?.last?.type == "done")
        let first = try #require(Self.enginePids(env).first)
        kill(first, SIGSTOP)  // alive, silent: only the health check can tell
        try env.until("the hung engine to be replaced", timeout: 60) { Self.enginePids(env).count == 2 }
        #expect(env.log().contains("[engine local] stopped answering; restarting it"), "\(env.log())")
        #expect(!Self.alive(first), "the hung engine was killed after grace_s")
        try Self.push(redis, env, ["after"])
        #expect(try events.waitForTerminal(["after"], timeout: 40)["after"]?.last?.type == "done")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 30)) == 0)
    }

    @Test func statesAndRepliesReadBackAsWritten() throws {
        let env = try TestEnvironment("engine-state")
        let gate = EngineGate(dir: env.dir, managed: ["local"])
        #expect(gate.state("local") == nil)
        #expect(gate.waitSeconds("local") == EngineGate.waitSeconds, "no word from the supervisor yet: wait")
        #expect(gate.waitSeconds("other") == nil && gate.unavailable("other") == nil, "an unmanaged provider is never held")
        try "failed it exited (exit 3)\n".write(toFile: EngineState.stateFile(env.dir, "fresh"), atomically: true, encoding: .utf8)
        let fresh = EngineGate(dir: env.dir, managed: ["fresh"])
        #expect(fresh.state("fresh") == .failed("it exited (exit 3)"))
        #expect(fresh.waitSeconds("fresh") == nil)
        #expect(fresh.unavailable("fresh")?.code == .upstreamUnavailable)
        #expect(fresh.unavailable("fresh")?.message.contains("it exited (exit 3)") == true)

        let reply = ReloadReply(farm: "h-1", status: .refused, message: "farm.yaml: workers must be \"1\" or more\nsee docs")
        #expect(ReloadReply(json: reply.json) == reply)
        #expect(ReloadRequest(ReloadRequest(reply: "p:farms:reply:x").json) == ReloadRequest(reply: "p:farms:reply:x"))
        #expect(ReloadRequest("{\"op\":\"drain\"}") == nil)
    }

    @Test func launchSettingsAreValidated() throws {
        let env = try TestEnvironment("engine-config")
        let bad = try env.writeConfig(
            providers: "  local: {kind: sim, base_url: \"http://127.0.0.1:1/v1\", launch: {command: [no-such-engine-binary], ready_timeout_s: 5}}\n")
        #expect(throws: LLMQError.self) { try ConfigLoader.load(path: bad) }
        do {
            _ = try ConfigLoader.load(path: bad)
        } catch {
            #expect(error.message.contains("providers.local.launch.command"), "\(error.message)")
        }
        let typo = try env.writeConfig(
            providers: "  local: {kind: sim, base_url: \"http://127.0.0.1:1/v1\", launch: {command: [/bin/true], ready_timeot_s: 5}}\n")
        #expect(throws: LLMQError.self) { try ConfigLoader.load(path: typo) }
        let ok = try env.writeConfig(
            providers: "  local: {kind: ollama, launch: {command: [/bin/true], lazy: true, idle_stop_s: 60}}\n")
        let c = try ConfigLoader.load(path: ok)
        #expect(LaunchConfig.readyURL(for: c.providers["local"]!) == "http://127.0.0.1:11434/api/tags")
    }
}
