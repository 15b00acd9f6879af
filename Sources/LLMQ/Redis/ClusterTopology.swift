import Foundation
import Synchronization

/// Which master serves each of a cluster's 16384 slots, learned with CLUSTER SLOTS.
///
/// One per cluster per process (`shared(for:)`), so a MOVED seen by one connection
/// re-routes every other connection of the process at once instead of each paying
/// its own redirect. Refreshed on MOVED, after a lost connection (`invalidate`),
/// and when older than `maxAge` as connections are made.
///
/// Thread rules: every member may be called from any thread; state is guarded by a `Mutex`.
public final class ClusterTopology: Sendable {
    public struct Map: Sendable {
        /// Masters, in the order CLUSTER SLOTS listed them.
        public var nodes: [RedisURL.HostPort] = []
        /// For each slot, an index into `nodes`, or -1 when no master serves it.
        public var slots: [Int16] = Array(repeating: -1, count: ClusterSlot.count)
        public var version = 0

        public func node(forSlot slot: Int) -> RedisURL.HostPort? {
            let i = Int(slots[slot])
            return i >= 0 ? nodes[i] : nil
        }
    }

    private struct State {
        var map = Map()
        var learnedAt: Double = 0
        var stale = true
    }

    public let seeds: [RedisURL.HostPort]
    private let state = Mutex(State())
    /// A map this old is learned again when a connection is made.
    static let maxAge = 30.0

    init(seeds: [RedisURL.HostPort]) { self.seeds = seeds }

    private static let registry = Mutex<[[RedisURL.HostPort]: ClusterTopology]>([:])

    /// The process' map for the cluster these seeds belong to.
    public static func shared(for seeds: [RedisURL.HostPort]) -> ClusterTopology {
        registry.withLock { r in
            if let t = r[seeds] { return t }
            let t = ClusterTopology(seeds: seeds)
            r[seeds] = t
            return t
        }
    }

    public var map: Map { state.withLock { $0.map } }
    public var version: Int { state.withLock { $0.map.version } }

    /// Whether the map should be learned again before it is trusted.
    public var needsRefresh: Bool {
        state.withLock { $0.stale || Clock.unixTime() - $0.learnedAt > Self.maxAge }
    }

    /// Marks the map as doubtful (a node was lost): the next connection made learns it again.
    public func invalidate() { state.withLock { $0.stale = true } }

    /// Addresses worth trying to reach the cluster: known masters first (they survive seed
    /// nodes that were replaced), then the seeds.
    public var candidates: [RedisURL.HostPort] {
        let known = state.withLock { $0.map.nodes }
        var seen = Set<RedisURL.HostPort>()
        return (known + seeds).filter { seen.insert($0).inserted }
    }

    /// A MOVED reply: the slot lives on `node` now. Returns whether that was news
    /// (then the caller learns the full map again).
    func moved(slot: Int, to node: RedisURL.HostPort) -> Bool {
        state.withLock { s in
            if s.map.node(forSlot: slot) == node { return false }
            var i = s.map.nodes.firstIndex(of: node)
            if i == nil {
                s.map.nodes.append(node)
                i = s.map.nodes.count - 1
            }
            s.map.slots[slot] = Int16(i!)
            s.map.version += 1
            s.stale = true
            return true
        }
    }

    /// Learns the map from the CLUSTER SLOTS reply of the node at `asked`.
    func learn(_ reply: RedisReply, asked: RedisURL.HostPort) throws(LLMQError) {
        guard let ranges = reply.array else {
            throw .redis("CLUSTER SLOTS at \(asked) answered \(reply); is it a cluster node (cluster-enabled yes)?")
        }
        var map = Map()
        for r in ranges {
            guard let parts = r.array, parts.count >= 3, let lo = parts[0].integer, let hi = parts[1].integer,
                  let master = parts[2].array, master.count >= 2, let port = master[1].integer,
                  lo >= 0, hi < ClusterSlot.count, lo <= hi else { continue }
            var host = master[0].string ?? ""
            // An empty or "?" endpoint means "the address you reached me at".
            if host.isEmpty || host == "?" { host = asked.host }
            let node = RedisURL.HostPort(host: host, port: port)
            var i = map.nodes.firstIndex(of: node)
            if i == nil {
                map.nodes.append(node)
                i = map.nodes.count - 1
            }
            for s in lo...hi { map.slots[s] = Int16(i!) }
        }
        guard !map.nodes.isEmpty else {
            throw .redis("the cluster at \(asked) serves no slot yet; create it (redis-cli --cluster create) or wait for it to finish")
        }
        state.withLock { s in
            map.version = s.map.version + 1
            s.map = map
            s.learnedAt = Clock.unixTime()
            s.stale = false
        }
    }
}
