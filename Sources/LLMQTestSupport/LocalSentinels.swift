import Foundation
import LLMQ

/// A Sentinel deployment on free loopback ports for tests: one master, one
/// replica and three sentinels (`redis-server --sentinel` with a generated
/// configuration, quorum 2, a 2 s down-after and a short failover timeout).
/// `init` returns once every sentinel names the master, knows the replica and
/// the other two sentinels, and reports a usable quorum.
public final class LocalSentinels: @unchecked Sendable {  // used from one test at a time
    public let masterName = "llmqtest"
    public let directory: String
    /// The data nodes by port; roles swap in a failover, ports stay.
    public private(set) var nodes: [Int: LocalRedis] = [:]
    public let sentinelPorts: [Int]
    private var sentinels: [ChildProcess] = []

    public init(directory: String) throws {
        self.directory = directory
        let master = try LocalRedis(directory: "\(directory)/node-a")
        let replica = try LocalRedis(directory: "\(directory)/node-b", extraArguments: ["--replicaof", "127.0.0.1", String(master.port)])
        nodes = [master.port: master, replica.port: replica]
        // Sentinels learn replicas from the master's INFO; a replica already linked is seen at once.
        try Self.until("the replica linked to its master", timeout: 20) { try Self.linked(replica.port) }
        var ports: [Int] = []
        for i in 0..<3 {
            let port = try FreePort.find()
            let conf = "\(directory)/sentinel-\(i).conf"
            try """
                port \(port)
                bind 127.0.0.1
                daemonize no
                dir \(directory)
                logfile \(directory)/sentinel-\(i).log
                sentinel monitor \(masterName) 127.0.0.1 \(master.port) 2
                sentinel down-after-milliseconds \(masterName) 2000
                sentinel failover-timeout \(masterName) 4000
                sentinel parallel-syncs \(masterName) 1

                """.write(toFile: conf, atomically: true, encoding: .utf8)
            sentinels.append(try ChildProcess([ChildProcess.which("redis-server")!, conf, "--sentinel"], ownProcessGroup: true))
            ports.append(port)
        }
        sentinelPorts = ports
        try waitAgreement(master: master.port, replica: replica.port)
    }

    deinit { stop() }

    public func stop() {
        for s in sentinels { s.signal(SIGKILL) }
        for n in nodes.values { n.process.signal(SIGKILL) }
    }

    /// `redis+sentinel://` for the three sentinels.
    public var url: String {
        "redis+sentinel://\(sentinelPorts.map { "127.0.0.1:\($0)" }.joined(separator: ","))/\(masterName)"
    }

    /// The master's port according to the first sentinel that answers.
    public func masterPort() -> Int? {
        for p in sentinelPorts {
            guard let r = try? PlainRedis(port: p), let pair = (try? r.run("SENTINEL", "get-master-addr-by-name", masterName))?.array,
                  pair.count == 2, let port = pair[1].string.flatMap(Int.init) else { continue }
            return port
        }
        return nil
    }

    /// The data node that is not `port`.
    public func otherPort(_ port: Int) -> Int { nodes.keys.first { $0 != port }! }

    /// Waits until every sentinel names `master` as the master, lists `replica` as a healthy replica,
    /// knows the two other sentinels, and passes CKQUORUM.
    public func waitAgreement(master: Int, replica: Int, timeout: Double = 40) throws {
        var last = ""
        try Self.until("the sentinels to agree on master \(master) with replica \(replica) (last: \(last))", timeout: timeout) {
            for p in sentinelPorts {
                let s = try PlainRedis(port: p)
                let pair = try s.run("SENTINEL", "get-master-addr-by-name", masterName).array ?? []
                guard pair.count == 2, pair[1].string == String(master) else {
                    last = "sentinel \(p) names \(pair)"
                    return false
                }
                let replicas = try s.run("SENTINEL", "replicas", masterName).array ?? []
                let healthy = replicas.contains { r in
                    let f = Self.fields(r)
                    return f["port"] == String(replica) && f["flags"] == "slave" && f["master-link-status"] == "ok"
                }
                guard healthy else {
                    last = "sentinel \(p) does not see replica \(replica) healthy: \(replicas.map { Self.fields($0)["flags"] ?? "?" })"
                    return false
                }
                guard (try s.run("SENTINEL", "sentinels", masterName).array ?? []).count == 2 else {
                    last = "sentinel \(p) does not know the two others yet"
                    return false
                }
                guard case .string(let ok) = try s.run("SENTINEL", "ckquorum", masterName), ok.hasPrefix("OK") else {
                    last = "sentinel \(p): no quorum"
                    return false
                }
            }
            return true
        }
    }

    /// Asks a sentinel for a failover (the planned switch-over an operator makes) and waits until all
    /// three name the former replica (the former master becomes its replica some seconds later).
    @discardableResult
    public func failover() throws -> (old: Int, new: Int) {
        guard let old = masterPort() else { throw TestFailure("no sentinel names a master") }
        let new = otherPort(old)
        let r = try PlainRedis(port: sentinelPorts[0]).run("SENTINEL", "failover", masterName)
        guard r == .string("OK") else { throw TestFailure("SENTINEL FAILOVER refused: \(r)") }
        try waitNamed(new)
        return (old, new)
    }

    /// Kills the master with SIGKILL, waits for the sentinels to promote the replica, then starts the
    /// old node again as a replica of the new master (what a pod restart with a Sentinel-aware start does).
    /// The restarted node may not be promoted (replica-priority 0): sentinels that briefly lose sight of the
    /// new master on a loaded machine would otherwise fail over again, to a node still in its first full
    /// sync, and Redis would hand the farm an empty dataset. The tests measure one failover, not that.
    @discardableResult
    public func killMaster() async throws -> (old: Int, new: Int) {
        guard let old = masterPort(), let node = nodes[old] else { throw TestFailure("no sentinel names a master") }
        let new = otherPort(old)
        node.process.signal(SIGKILL)
        _ = await node.process.wait()
        try Self.until("a sentinel to promote \(new)", timeout: 30) { self.masterPort() == new }
        nodes[old] = try LocalRedis(directory: "\(directory)/node-\(old)-again", port: old,
                                    extraArguments: ["--replicaof", "127.0.0.1", String(new), "--replica-priority", "0"])
        try waitNamed(new)
        return (old, new)
    }

    /// Waits until every sentinel names `master`.
    public func waitNamed(_ master: Int, timeout: Double = 30) throws {
        try Self.until("every sentinel to name master \(master)", timeout: timeout) {
            try sentinelPorts.allSatisfy { p in
                try PlainRedis(port: p).run("SENTINEL", "get-master-addr-by-name", masterName).array?.last?.string == String(master)
            }
        }
    }

    static func linked(_ port: Int) throws -> Bool {
        let info = try PlainRedis(port: port).run("INFO", "replication").string ?? ""
        return info.contains("master_link_status:up")
    }

    static func fields(_ r: PlainRedis.Reply) -> [String: String] {
        let a = r.array ?? []
        var out: [String: String] = [:]
        for i in stride(from: 0, to: a.count - 1, by: 2) { if let k = a[i].string { out[k] = a[i + 1].string ?? "" } }
        return out
    }

    static func until(_ what: @autoclosure () -> String, timeout: Double, _ condition: () throws -> Bool) throws {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if (try? condition()) == true { return }
            usleep(50_000)
        }
        throw TestFailure("timed out after \(timeout) s waiting for \(what())")
    }
}
