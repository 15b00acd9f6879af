import Dispatch
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Live reload of a farm: on SIGHUP, or a `reload` message on the control
/// channel `PREFIX:farms:control` (what `llmq reload` publishes, so farms on
/// other hosts are reached too), it reads the configuration again. An invalid
/// one is refused with a log line naming the key and the file, and the farm
/// runs on as it was. A valid one restarts the managed engines whose launch
/// settings changed, then rolls the workers one at a time (`Supervisor.roll`).
///
/// A request from Redis carries a reply key; the farm pushes its outcome there
/// (`ReloadReply`) so `llmq reload` can print it. Requests are handled one at
/// a time, in order; a signal during a roll queues one more reload.
///
/// Settings the farm process itself holds (redis, prefix, http_port,
/// http_host) keep their old values until the farm is restarted; a reload says so.
public final class ReloadController: Service {
    /// Reads and validates the configuration as the farm was started (file, environment, command-line overrides).
    public typealias Loader = @Sendable () throws(LLMQError) -> FarmConfig

    public static func channel(_ keys: Keys) -> String { "\(keys.prefix):farms:control" }

    let load: Loader
    let supervisor: Supervisor
    let engines: EngineManager?
    let url: RedisURL
    let keys: Keys
    let farm: String
    let logger: Logger
    private let current: Mutex<FarmConfig>
    private let requests = AsyncStream<String?>.makeStream()
    private let stopping = Atomic<Bool>(false)
    private let reloads = Atomic<Int>(0)

    public init(initial: FarmConfig, load: @escaping Loader, supervisor: Supervisor, engines: EngineManager?, farm: String, logger: Logger) throws(LLMQError) {
        self.current = Mutex(initial)
        self.load = load
        self.supervisor = supervisor
        self.engines = engines
        self.url = try RedisURL(initial.redis)
        self.keys = Keys(prefix: initial.prefix)
        self.farm = farm
        self.logger = logger
        // From here on SIGHUP means reload, not the default (which ends the process); `run` handles it.
        signal(SIGHUP, SIG_IGN)
    }

    public func run() async throws {
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        let input = requests.continuation
        hup.setEventHandler { input.yield(nil) }
        hup.resume()
        defer { hup.cancel() }
        await withDiscardingTaskGroup { group in
            group.addTask {
                await runOnThread(named: "llmq-reload", loop: { self.listen() }, stop: { self.stopping.store(true, ordering: .relaxed) })
                input.finish()
            }
            for await reply in requests.stream {
                if Task.isShuttingDownGracefully { continue }
                let outcome = await reload()
                if let reply { send(outcome, to: reply) }
            }
        }
    }

    /// Reads the configuration again and applies it; returns the outcome.
    public func reload() async -> ReloadReply {
        let n = reloads.add(1, ordering: .relaxed).newValue
        logger.notice("reload \(n): reading the configuration again")
        let next: FarmConfig
        do {
            next = try load()
        } catch {
            logger.error("reload \(n) refused, the farm keeps running on its previous configuration: \(error.message)")
            return ReloadReply(farm: farm, status: .refused, message: error.message)
        }
        let old = current.withLock { $0 }
        var notes: [String] = []
        if next.redis != old.redis { notes.append("redis") }
        if next.prefix != old.prefix { notes.append("prefix") }
        if next.httpPort != old.httpPort { notes.append("http_port") }
        if next.httpHost != old.httpHost { notes.append("http_host") }
        if !notes.isEmpty {
            logger.warning("reload \(n): \(notes.joined(separator: ", ")) changed; the farm process keeps the old value until it is restarted (the workers take the new one)")
        }
        if let engines { await engines.apply(next) }
        current.withLock { $0 = next }
        logger.notice("reload \(n): configuration valid; rolling \(supervisor.workers) workers one at a time (to \(next.workers))")
        let check = ServingCheck(url: url, keys: keys)
        if let why = await supervisor.roll(workers: next.workers, serving: { slot, pid in check.serving(slot: slot, pid: pid) }) {
            logger.error("reload \(n) stopped part way: \(why)")
            return ReloadReply(farm: farm, status: .failed, message: why)
        }
        logger.notice("reload \(n) done: every worker runs the new configuration")
        return ReloadReply(farm: farm, status: .done, message: "\(next.workers) workers on the new configuration")
    }

    /// Subscribes to the control channel; each `reload` message queues a reload.
    private func listen() {
        let channel = Self.channel(keys)
        var backoff = 0.05
        while !stopping.load(ordering: .relaxed) {
            do throws(LLMQError) {
                let c = try RedisConnection(url)
                let r = try c.command(["SUBSCRIBE", channel])
                guard r.array?.first?.string == "subscribe" else { throw .redis("SUBSCRIBE \(channel) failed: \(r)") }
                backoff = 0.05
                while !stopping.load(ordering: .relaxed) {
                    guard let msg = try c.waitReply(timeout: 0.25), let parts = msg.array, parts.count == 3,
                          parts[0].string == "message", let text = parts[2].string else { continue }
                    guard let request = ReloadRequest(text) else {
                        logger.warning("ignored a message on \(channel) that is not a reload request: \(text.prefix(200))")
                        continue
                    }
                    logger.notice("reload asked through Redis")
                    requests.continuation.yield(request.reply)
                }
            } catch {
                logger.warning("reload listener lost Redis, reconnecting", metadata: ["error": "\(error.message)"])
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 2)
            }
        }
    }

    private func send(_ outcome: ReloadReply, to key: String) {
        do throws(LLMQError) {
            let c = try RedisConnection(url)
            try c.append(["RPUSH", key, outcome.json])
            try c.append(["EXPIRE", key, "600"])
            _ = try c.reply()
            _ = try c.reply()
        } catch {
            logger.warning("could not send the reload's outcome to \(key): \(error.message)")
        }
    }
}

/// Whether the worker of a slot, started as `pid`, has registered with Redis in the state `running`.
struct ServingCheck: Sendable {
    let url: RedisURL
    let keys: Keys

    func serving(slot: Int, pid: pid_t) -> Bool {
        guard let c = try? RedisConnection(url, connectTimeout: 2),
              let r = try? c.command(["HMGET", keys.worker(Worker.defaultID(slot: slot)), "pid", "state"]),
              let parts = r.array, parts.count == 2 else { return false }
        return parts[0].string == String(pid) && parts[1].string == "running"
    }
}

/// What `llmq reload` publishes: `{"op":"reload","reply":"KEY"}`.
public struct ReloadRequest: Sendable, Equatable {
    public var reply: String?

    public init(reply: String?) { self.reply = reply }

    public init?(_ text: String) {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], obj["op"] as? String == "reload" else {
            return nil
        }
        reply = obj["reply"] as? String
    }

    public var json: String {
        let r = reply.map { ",\"reply\":\(JSONText.quote($0))" } ?? ""
        return "{\"op\":\"reload\"\(r)}"
    }
}

/// A farm's answer to a reload request.
public struct ReloadReply: Sendable, Equatable {
    public enum Status: String, Sendable {
        /// The configuration was invalid; nothing changed.
        case refused
        /// Every worker runs the new configuration.
        case done
        /// The configuration was valid but the roll stopped part way.
        case failed
    }

    public var farm: String
    public var status: Status
    public var message: String

    public init(farm: String, status: Status, message: String) {
        self.farm = farm
        self.status = status
        self.message = message
    }

    public var json: String {
        "{\"farm\":\(JSONText.quote(farm)),\"status\":\"\(status.rawValue)\",\"message\":\(JSONText.quote(message))}"
    }

    public init?(json text: String) {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let farm = obj["farm"] as? String, let s = obj["status"] as? String, let status = Status(rawValue: s) else { return nil }
        self.init(farm: farm, status: status, message: obj["message"] as? String ?? "")
    }
}

enum JSONText {
    static func quote(_ s: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])) ?? Data("[\"\"]".utf8)
        let text = String(decoding: data, as: UTF8.self)
        return String(text.dropFirst().dropLast())
    }
}
