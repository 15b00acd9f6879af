import Foundation
import LLMQ
import LLMQTestSupport
import Synchronization
import Testing

/// Live reload (SIGHUP, `llmq reload`): a valid configuration rolls the workers one at a time under load,
/// an invalid one is refused and the farm serves on.
@Suite(.serialized) struct ReloadTests {
    /// Worker id → pid of the workers registered as running.
    static func running(_ redis: PlainRedis, _ env: TestEnvironment) throws -> [String: String] {
        var out: [String: String] = [:]
        for w in try redis.run("ZRANGE", env.key("workers"), "0", "-1").array ?? [] {
            guard let id = w.string, let fields = try redis.run("HMGET", env.key("worker:\(id)"), "pid", "state").array,
                  fields.count == 2, fields[1].string == "running", let pid = fields[0].string else { continue }
            out[id] = pid
        }
        return out
    }

    static func reload(_ env: TestEnvironment, log: String) async throws -> (Int32?, String) {
        let p = try env.start(["reload", "--redis", env.redisURL, "--prefix", env.prefix, "--timeout", "90"], log: log)
        let status = try await env.waitExit(p, timeout: 100)
        return (ChildProcess.exitCode(status), env.log(log))
    }

    @Test func aValidReloadRollsEveryWorkerUnderLoadWithoutLosingAJob() async throws {
        let env = try TestEnvironment("reload-roll")
        let workers = 3
        let config = try env.writeConfig(workers: workers, modes: ["chat": 4], drainTimeout: 20)
        let events = try env.collector()
        let redis = try env.client()
        let farm = try env.start(["farm", "--config", config])
        try env.until("\(workers) workers running", timeout: 30) { try Self.running(redis, env).count == workers }
        let before = try Self.running(redis, env)

        // Load throughout the reload: a producer pushes jobs of ~100 ms, a sampler counts running workers.
        let load = LoadState(workers: workers)
        let (port, prefix) = (env.redis.port, env.prefix)
        let producer = Task.detached { () throws -> [String] in
            let r = try PlainRedis(port: port)
            var ids: [String] = []
            while !load.stop.load(ordering: .relaxed) && ids.count < 5000 {
                let id = "load-\(ids.count)"
                try r.run("LPUSH", "\(prefix):{chat}:queue", TestEnvironment.chatJob(id: id, model: "sim/sim:tokens=5,delay_ms=20"))
                ids.append(id)
                try await Task.sleep(for: .milliseconds(15))
            }
            return ids
        }
        let sampler = Task.detached { () throws in
            let r = try PlainRedis(port: port)
            let sampleEnv = env
            while !load.stop.load(ordering: .relaxed) && load.samples.load(ordering: .relaxed) < 100_000 {
                let n = try Self.running(r, sampleEnv).count
                if n < load.lowest.load(ordering: .relaxed) { load.lowest.store(n, ordering: .relaxed) }
                load.samples.add(1, ordering: .relaxed)
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        try await Task.sleep(for: .milliseconds(300))  // the load is under way before the reload starts

        // A changed setting the new workers take (they log their modes when they start).
        try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(of: "chat: {concurrency: 4}", with: "chat: {concurrency: 6}")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let (code, out) = try await Self.reload(env, log: "reload.log")
        #expect(code == 0, "\(out)\n\(env.log())")
        #expect(out.contains(": done: \(workers) workers on the new configuration"), "\(out)")
        let after = try Self.running(redis, env)

        load.stop.store(true, ordering: .relaxed)
        let ids = try await producer.value
        try await sampler.value
        let all = try events.waitForTerminal(ids, timeout: 60)
        for id in ids {
            let evs = all[id] ?? []
            #expect(evs.filter(\.isTerminal).count == 1 && evs.last?.type == "done", "\(id) ends exactly once: \(evs.map(\.raw))")
        }
        #expect(ids.count > 50, "the load ran through the reload (\(ids.count) jobs)")
        #expect(load.samples.load(ordering: .relaxed) > 20)
        #expect(load.lowest.load(ordering: .relaxed) >= workers - 1, "running workers dropped to \(load.lowest.load(ordering: .relaxed)) of \(workers)")
        #expect(after.count == workers, "\(after)")
        for (id, pid) in before { #expect(after[id] != nil && after[id] != pid, "\(id) was replaced: before \(before), after \(after)") }
        #expect(env.log().contains("chat=6"), "the new workers run the new configuration")
        #expect(try redis.run("LLEN", env.key("{chat}:queue")).int == 0)
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 40)) == 0)
    }

    @Test func anInvalidConfigurationIsRefusedAndTheFarmServesOn() async throws {
        let env = try TestEnvironment("reload-refused")
        let config = try env.writeConfig(workers: 2, modes: ["chat": 4])
        let events = try env.collector()
        let redis = try env.client()
        let (alone, nobody) = try await Self.reload(env, log: "nobody.log")
        #expect(alone == 1 && nobody.contains("no farm listens on \(env.prefix):farms:control"), "\(nobody)")
        let farm = try env.start(["farm", "--config", config])
        try env.until("2 workers running", timeout: 30) { try Self.running(redis, env).count == 2 }
        let before = try Self.running(redis, env)

        let good = try String(contentsOfFile: config, encoding: .utf8)
        try good.replacingOccurrences(of: "workers: 2", with: "workers: 0").write(toFile: config, atomically: true, encoding: .utf8)
        let (code, out) = try await Self.reload(env, log: "reload.log")
        #expect(code == 1, "\(out)")
        #expect(out.contains(": refused: ") && out.contains("workers must be from 1 to 256"), "llmq reload reports the refusal: \(out)")

        // The same through SIGHUP, with a file that is not even YAML.
        try "modes: [\n".write(toFile: config, atomically: true, encoding: .utf8)
        farm.signal(SIGHUP)
        try env.until("the farm to refuse the second reload", timeout: 20) { env.log().contains("reload 2 refused") }
        #expect(env.log().contains("the farm keeps running on its previous configuration"), "\(env.log())")

        try redis.run("LPUSH", env.key("{chat}:queue"), TestEnvironment.chatJob(id: "still", model: "sim/sim:tokens=3"))
        #expect(try events.waitForTerminal(["still"], timeout: 30)["still"]?.last?.type == "done")
        #expect(farm.exitStatus == nil)
        #expect(try Self.running(redis, env) == before, "a refused reload leaves the workers alone")

        // Fixed again, a SIGHUP rolls the workers.
        try good.write(toFile: config, atomically: true, encoding: .utf8)
        farm.signal(SIGHUP)
        try env.until("the third reload to finish", timeout: 60) { env.log().contains("reload 3 done") }
        let after = try Self.running(redis, env)
        #expect(after.count == 2 && after.allSatisfy { before[$0.key] != $0.value }, "before \(before), after \(after)")
        farm.signal(SIGTERM)
        #expect(ChildProcess.exitCode(try await env.waitExit(farm, timeout: 40)) == 0)
    }
}

/// What the producer and the sampler of the rolling test share.
final class LoadState: Sendable {
    let stop = Atomic<Bool>(false)
    /// Fewest workers seen running.
    let lowest: Atomic<Int>
    let samples = Atomic<Int>(0)

    init(workers: Int) { lowest = Atomic(workers) }
}
