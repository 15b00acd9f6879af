import Foundation
import Logging
import Synchronization

/// Finds the current master of a `redis+sentinel://` URL: asks the sentinels
/// in turn (`SENTINEL get-master-addr-by-name`), then confirms with `ROLE` on
/// the address they gave that it is a master, not a replica a failover has
/// just demoted. `RedisConnection.init` calls it, so every connection, and so
/// every reconnect after a lost connection or a READONLY, rediscovers the
/// master; nothing is pinned to an address the sentinels moved away from.
///
/// A thread per sentinel set follows `+switch-master`, logs each switch and
/// keeps the last known master, which serves when no sentinel answers.
///
/// One resolver per sentinel set for the whole process: connections are made
/// from a URL alone, in many places, so the knowledge of where the master is
/// has to live beside them rather than be passed down.
///
/// Thread rules: any thread; state guarded by a mutex.
final class SentinelResolver: Sendable {
    private static let all = Mutex<[SentinelSet: SentinelResolver]>([:])

    private struct State {
        var master: SentinelSet.Address?
        /// The sentinel that answered last, asked first next time.
        var preferred = 0
        var watching = false
        /// The URL connections were made from (credentials and database for the data nodes).
        var url: RedisURL?
    }

    let set: SentinelSet
    private let state = Mutex(State())
    private let logger = Logger(label: "llmq.sentinel")

    private init(_ set: SentinelSet) { self.set = set }

    /// The address a connection to `url` must dial: `url` itself unless it names sentinels,
    /// else the plain address of the master they agree on now.
    static func target(for url: RedisURL, connectTimeout: Double) throws(LLMQError) -> RedisURL {
        guard let set = url.sentinel else { return url }
        let resolver = all.withLock { d in
            if let r = d[set] { return r }
            let r = SentinelResolver(set)
            d[set] = r
            return r
        }
        return try resolver.master(for: url, timeout: connectTimeout)
    }

    /// The last master this process saw for `set`, if any (for tests and logs).
    static func cachedMaster(of set: SentinelSet) -> SentinelSet.Address? {
        all.withLock { $0[set] }?.state.withLock { $0.master }
    }

    private func master(for url: RedisURL, timeout: Double) throws(LLMQError) -> RedisURL {
        state.withLock { $0.url = url }
        startWatching()
        var problems: [String] = []
        // A failover in progress answers with an address that is not a master yet (or no longer):
        // a few quick rounds ride it out; callers with a reconnect loop retry beyond that.
        for round in 0..<3 {
            if round > 0 { usleep(useconds_t(150_000 * round)) }
            var address: SentinelSet.Address?
            do throws(LLMQError) {
                address = try askSentinels(timeout: min(timeout, 1))
            } catch {
                problems.append(error.message)
                address = state.withLock { $0.master }
            }
            guard let address else { continue }
            let node = url.node(host: address.host, port: address.port)
            do throws(LLMQError) {
                let probe = try RedisConnection(node, connectTimeout: timeout)
                let role = try probe.command(["ROLE"])
                // An ACL that denies ROLE leaves the sentinels' word.
                if case .error = role { return remember(address, node) }
                let kind = role.array?.first?.string ?? "unknown"
                if kind == "master" { return remember(address, node) }
                problems.append("\(address.host):\(address.port) is a \(kind), not a master (a failover is under way)")
            } catch {
                problems.append(error.message)
            }
            state.withLock { if $0.master == address { $0.master = nil } }
        }
        throw .redis("""
            no reachable master named \(set.masterName) through \(set): \(problems.suffix(3).joined(separator: "; ")); \
            check that the sentinels run and agree (redis-cli -p PORT SENTINEL get-master-addr-by-name \(set.masterName))
            """)
    }

    private func remember(_ address: SentinelSet.Address, _ node: RedisURL) -> RedisURL {
        let previous = state.withLock { s in
            defer { s.master = address }
            return s.master
        }
        if let previous, previous != address {
            logger.notice("Redis master moved", metadata: [
                "master_name": "\(set.masterName)", "from": "\(previous.host):\(previous.port)", "to": "\(address.host):\(address.port)",
            ])
        }
        return node
    }

    /// The master's address from the first sentinel that knows it, starting with the one that answered last.
    private func askSentinels(timeout: Double) throws(LLMQError) -> SentinelSet.Address {
        let first = state.withLock { $0.preferred }
        var problems: [String] = []
        for k in 0..<set.sentinels.count {
            let i = (first + k) % set.sentinels.count
            let s = set.sentinels[i]
            do throws(LLMQError) {
                let c = try connect(s, timeout: timeout)
                let r = try c.command(["SENTINEL", "get-master-addr-by-name", set.masterName])
                guard let pair = r.array, pair.count == 2, let host = pair[0].string, let port = pair[1].integer else {
                    problems.append("sentinel \(s.host):\(s.port) does not know a master named \(set.masterName) (\(r))")
                    continue
                }
                state.withLock { $0.preferred = i }
                return .init(host: host, port: port)
            } catch {
                problems.append(error.message)
            }
        }
        throw .redis("no sentinel answered: \(problems.joined(separator: "; "))")
    }

    private func connect(_ s: SentinelSet.Address, timeout: Double) throws(LLMQError) -> RedisConnection {
        try RedisConnection(RedisURL(host: s.host, port: s.port, password: set.password), connectTimeout: timeout)
    }

    // MARK: +switch-master

    /// Closes the connections a former master still serves. After a switch-over it keeps accepting
    /// writes until the sentinels demote it (about 10 s later, when they close these same connections),
    /// and every write it takes meanwhile is lost; closed now, every client reconnects through the
    /// sentinels to the new master. A master that died has closed them itself.
    private func cutOff(_ old: RedisURL) {
        do throws(LLMQError) {
            let c = try RedisConnection(old, connectTimeout: 1)
            var closed = 0
            for type in ["normal", "pubsub"] {
                closed += try c.command(["CLIENT", "KILL", "TYPE", type, "SKIPME", "yes"]).integer ?? 0
            }
            logger.notice("closed the connections the former master still served", metadata: [
                "former_master": "\(old.host):\(old.port)", "connections": "\(closed)",
            ])
        } catch {
            logger.debug("the former master is unreachable", metadata: ["error": "\(error.message)"])
        }
    }

    private func startWatching() {
        guard state.withLock({ s in
            defer { s.watching = true }
            return !s.watching
        }) else { return }
        let t = Thread { [self] in watch() }
        t.name = "llmq-sentinel"
        t.start()
    }

    /// Subscribes to `+switch-master` on one sentinel after another, for the life of the process.
    private func watch() {
        var i = 0
        var backoff = 0.1
        while true {
            let s = set.sentinels[i % set.sentinels.count]
            i += 1
            do throws(LLMQError) {
                let c = try connect(s, timeout: 1)
                let r = try c.command(["SUBSCRIBE", "+switch-master"])
                guard r.array?.first?.string == "subscribe" else { throw .redis("sentinel \(s.host):\(s.port) refused SUBSCRIBE: \(r)") }
                backoff = 0.1
                while true {
                    guard let msg = try c.waitReply(timeout: 5), let parts = msg.array, parts.count == 3, parts[0].string == "message",
                          let text = parts[2].string else { continue }
                    // "<name> <old-ip> <old-port> <new-ip> <new-port>"
                    let f = text.split(separator: " ")
                    guard f.count == 5, f[0] == set.masterName, let port = Int(f[4]) else { continue }
                    let address = SentinelSet.Address(host: String(f[3]), port: port)
                    let url = state.withLock { s in
                        s.master = address
                        return s.url
                    }
                    logger.notice("the sentinels switched the Redis master", metadata: [
                        "master_name": "\(set.masterName)", "from": "\(f[1]):\(f[2])", "to": "\(f[3]):\(f[4])",
                    ])
                    if let url, let oldPort = Int(f[2]) { cutOff(url.node(host: String(f[1]), port: oldPort)) }
                }
            } catch {
                logger.debug("sentinel watch lost its sentinel, trying the next", metadata: ["error": "\(error.message)"])
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(backoff * 2, 5)
            }
        }
    }
}
