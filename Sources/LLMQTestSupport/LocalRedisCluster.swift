import Foundation
import LLMQ

/// A private Redis Cluster for tests: `masters` × (1 + `replicasPerMaster`)
/// redis-server processes with `cluster-enabled yes` on free loopback ports,
/// joined with `redis-cli --cluster create`, ready once every node reports
/// `cluster_state:ok` and agrees on the slot map.
public final class LocalRedisCluster: @unchecked Sendable {  // used from one test at a time
    public private(set) var nodes: [LocalRedis] = []
    public let directory: String

    /// A short node timeout, so a killed master's replica is promoted within seconds.
    public init(directory: String, masters: Int = 3, replicasPerMaster: Int = 1, nodeTimeoutMs: Int = 1000) throws {
        self.directory = directory
        guard ChildProcess.which("redis-cli") != nil else {
            throw TestFailure("redis-cli is not installed; `apt-get install redis-tools` (make deps) — cluster tests need it")
        }
        for i in 0..<(masters * (1 + replicasPerMaster)) {
            let dir = "\(directory)/node-\(i)"
            nodes.append(try LocalRedis(directory: dir, extraArguments: [
                "--cluster-enabled", "yes", "--cluster-config-file", "\(dir)/nodes.conf",
                "--cluster-node-timeout", String(nodeTimeoutMs), "--cluster-require-full-coverage", "no",
                // The bus port defaults to port + 10000, past 65535 for most free ports.
                "--cluster-port", String(try FreePort.find()),
                // Replicas sync at once (not after the default 5 s) and may always take over.
                "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0",
            ]))
        }
        let create = Process()
        create.executableURL = URL(fileURLWithPath: ChildProcess.which("redis-cli")!)
        create.arguments = ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" }
            + ["--cluster-replicas", String(replicasPerMaster), "--cluster-yes"]
        let out = Pipe()
        create.standardOutput = out
        create.standardError = out
        try create.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        create.waitUntilExit()
        guard create.terminationStatus == 0, text.contains("[OK] All 16384 slots covered") else {
            throw TestFailure("redis-cli --cluster create failed (\(create.terminationStatus)): \(text.suffix(1500))")
        }
        try waitUntilHealthy(masters: masters)
    }

    deinit { for n in nodes { n.process.signal(SIGKILL) } }

    /// `redis+cluster://` naming every node as a seed.
    public var urlString: String { "redis+cluster://" + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") }

    /// A plain client of one node.
    public func client(_ node: Int) throws -> PlainRedis { try PlainRedis(port: nodes[node].port) }

    /// Nodes still running.
    public var live: [Int] { nodes.indices.filter { nodes[$0].process.exitStatus == nil } }

    /// Indices of the nodes that are masters now (by their own word).
    public func masters() throws -> [Int] {
        try live.filter { i in
            let info = try client(i).run("ROLE")
            return info.array?.first?.string == "master"
        }
    }

    /// The master serving `key`'s slot.
    public func master(for key: String) throws -> Int { try owner(ofSlot: ClusterSlot.of(key)) }

    /// Waits until every live node says `cluster_state:ok` and the masters serve all slots.
    public func waitUntilHealthy(masters expected: Int, timeout: Double = 30) throws {
        let end = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < end {
            var ok = true
            for i in live {
                let info = (try? client(i).run("CLUSTER", "INFO").string) ?? ""
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    ok = false
                    last = "node \(i): \(info.prefix(200))"
                    break
                }
            }
            // A replica that has not finished its first sync cannot take over.
            if ok, (try? masters().count) == expected, try live.allSatisfy({ i in
                let info = try client(i).run("INFO", "replication").string ?? ""
                return info.contains("role:master") || info.contains("master_link_status:up")
            }) { return }
            usleep(50_000)
        }
        throw TestFailure("the cluster did not become healthy within \(timeout) s: \(last)")
    }

    /// Kills a node with SIGKILL (no goodbye to the others).
    public func kill(_ node: Int) {
        nodes[node].process.signal(SIGKILL)
    }

    /// Moves one slot from its master to another master, key by key (so writes meet the
    /// migrating state: ASK and TRYAGAIN), the way `redis-cli --cluster reshard` does.
    /// Returns how many keys moved.
    @discardableResult
    public func migrate(slot: Int, to target: Int, pauseMicroseconds: UInt32 = 2000) throws -> Int {
        let source = try owner(ofSlot: slot)
        guard source != target else { throw TestFailure("slot \(slot) already lives on node \(target)") }
        let src = try client(source), dst = try client(target)
        guard let srcID = try src.run("CLUSTER", "MYID").string, let dstID = try dst.run("CLUSTER", "MYID").string else {
            throw TestFailure("CLUSTER MYID failed")
        }
        for r in [try dst.run("CLUSTER", "SETSLOT", String(slot), "IMPORTING", srcID),
                  try src.run("CLUSTER", "SETSLOT", String(slot), "MIGRATING", dstID)] where r != .string("OK") {
            throw TestFailure("CLUSTER SETSLOT failed: \(r)")
        }
        var moved = 0
        for _ in 0..<100_000 {
            let keys = (try src.run("CLUSTER", "GETKEYSINSLOT", String(slot), "1").array ?? []).compactMap(\.string)
            guard !keys.isEmpty else { break }
            let r = try src.run(["MIGRATE", "127.0.0.1", String(nodes[target].port), "", "0", "5000", "KEYS"] + keys)
            if case .error(let e) = r { throw TestFailure("MIGRATE failed: \(e)") }
            moved += keys.count
            usleep(pauseMicroseconds)
        }
        for i in try masters() {
            let r = try client(i).run("CLUSTER", "SETSLOT", String(slot), "NODE", dstID)
            if r != .string("OK") { throw TestFailure("CLUSTER SETSLOT NODE on node \(i) failed: \(r)") }
        }
        return moved
    }

    /// The master serving a slot, by the slot map of a live master.
    public func owner(ofSlot slot: Int) throws -> Int {
        for i in try masters() {
            for range in try client(i).run("CLUSTER", "SLOTS").array ?? [] {
                guard let parts = range.array, parts.count >= 3, let lo = parts[0].int, let hi = parts[1].int,
                      let port = parts[2].array?[1].int, (lo...hi).contains(slot) else { continue }
                if let n = nodes.firstIndex(where: { $0.port == port }) { return n }
            }
        }
        throw TestFailure("no master serves slot \(slot)")
    }

    /// All keys under a prefix across the masters (KEYS per node: tests only).
    public func keys(matching pattern: String) throws -> [String] {
        try masters().flatMap { i in (try client(i).run("KEYS", pattern).array ?? []).compactMap(\.string) }
    }
}
