import CHiredis
import Foundation

/// The cluster side of a `RedisConnection`: one connection per master, each
/// command appended to the master owning its key's slot, replies handed back in
/// the order the commands were given.
///
/// A pipeline spread over several masters is written to all of them before the
/// first reply is read, so the masters work in parallel. A MOVED or ASK reply is
/// followed: every reply still in flight is read first, then the redirected
/// commands are sent again one by one to the named node (after ASKING for ASK), so
/// replies keep their order. A MOVED also re-learns the process' slot map.
///
/// Commands without a key (PING, PUBLISH, SUBSCRIBE, WAIT, SCAN…) go to the node
/// the connection last talked to, so `SSUBSCRIBE key` followed by `SUBSCRIBE` keeps
/// one subscriber socket, and WAIT follows the write it waits for. MULTI is not
/// routed; use a script (every llmq script touches one slot).
///
/// Ordering: commands to one node run in order; commands to different nodes have no
/// order between them. A caller that needs "A applied before B" across slots waits
/// for A's reply before appending B (the runner's settle and the reaper do).
///
/// Thread rules: as its `RedisConnection` (one thread at a time).
final class ClusterRouter {
    private struct Pending {
        var node: RedisURL.HostPort
        var command: ArraySlice<UInt8>
    }

    private struct Redirect {
        var ask: Bool
        var slot: Int
        var node: RedisURL.HostPort

        init?(_ reply: RedisReply, current: RedisURL.HostPort) {
            guard case .error(let e) = reply else { return nil }
            let moved = e.hasPrefix("MOVED "), ask = e.hasPrefix("ASK ")
            guard moved || ask else { return nil }
            let parts = e.split(separator: " ")
            guard parts.count >= 3, let slot = Int(parts[1]), let colon = parts[2].lastIndex(of: ":"),
                  let port = Int(parts[2][parts[2].index(after: colon)...]) else { return nil }
            var host = String(parts[2][..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            self.ask = ask
            self.slot = slot
            node = RedisURL.HostPort(host: host.isEmpty ? current.host : host, port: port)
        }
    }

    let url: RedisURL
    let topology: ClusterTopology
    let homeAddress: RedisURL.HostPort
    private var nodes: [RedisURL.HostPort: RedisConnection] = [:]
    private var map: ClusterTopology.Map
    private var currentAddress: RedisURL.HostPort
    private var timeout: Double??
    private var pending: [Pending] = []
    private var head = 0
    private var ready: [RedisReply] = []
    private var readyHead = 0
    private var unflushed = false
    /// A non-routing connection to the home node, for `masters()`.
    private var plainHome: RedisConnection?
    /// Redirects one command may follow before its reply is handed back as it is.
    static let maxRedirects = 5

    init(url: RedisURL, home: RedisConnection, address: RedisURL.HostPort) throws(LLMQError) {
        self.url = url
        topology = ClusterTopology.shared(for: url.cluster ?? [address])
        homeAddress = address
        currentAddress = address
        if topology.needsRefresh { try Self.learn(topology, from: home, at: address) }
        map = topology.map
    }

    private static func learn(_ topology: ClusterTopology, from c: RedisConnection, at address: RedisURL.HostPort) throws(LLMQError) {
        try topology.learn(try c.nodeCommand(["CLUSTER", "SLOTS"]), asked: address)
    }

    /// Runs `body`; a failure marks the slot map doubtful so the next connection learns it again.
    func guarded<R>(_ body: (ClusterRouter) throws(LLMQError) -> R) throws(LLMQError) -> R {
        do {
            return try body(self)
        } catch {
            topology.invalidate()
            throw error
        }
    }

    // MARK: nodes

    private func connection(_ address: RedisURL.HostPort, home: RedisConnection) throws(LLMQError) -> RedisConnection {
        if address == homeAddress { return home }
        if let c = nodes[address] { return c }
        let c = try RedisConnection(url.node(address), connectTimeout: 2)
        if let timeout { c.nodeSetTimeout(timeout) }
        nodes[address] = c
        return c
    }

    func current(home: RedisConnection) throws(LLMQError) -> RedisConnection { try connection(currentAddress, home: home) }

    func fileDescriptor(home: RedisConnection) -> Int32 {
        ((try? current(home: home)) ?? home).nodeFileDescriptor
    }

    func setTimeout(_ seconds: Double?, home: RedisConnection) {
        timeout = .some(seconds)
        home.nodeSetTimeout(seconds)
        for c in nodes.values { c.nodeSetTimeout(seconds) }
    }

    private func address(forSlot slot: Int?) -> RedisURL.HostPort {
        guard let slot else { return currentAddress }
        if map.version != topology.version { map = topology.map }
        return map.node(forSlot: slot) ?? currentAddress
    }

    // MARK: writing

    private func dispatch(_ command: ArraySlice<UInt8>, slot: Int?, home: RedisConnection) throws(LLMQError) {
        let to = address(forSlot: slot)
        let c = try connection(to, home: home)
        try command.withUnsafeBufferPointer { b throws(LLMQError) in try c.nodeAppendEncoded(b) }
        pending.append(Pending(node: to, command: command))
        currentAddress = to
        unflushed = true
    }

    func append(_ args: [[UInt8]], home: RedisConnection) throws(LLMQError) {
        var bytes: [UInt8] = []
        RESP.appendArrayHeader(args.count, to: &bytes)
        for a in args { RESP.appendBulk(a, to: &bytes) }
        try bytes.withUnsafeBufferPointer { b throws(LLMQError) in try appendEncoded(b, home: home) }
    }

    /// Splits RESP-encoded commands (arrays of bulk strings, as `RESP` writes them) and routes each.
    func appendEncoded(_ bytes: UnsafeBufferPointer<UInt8>, home: RedisConnection) throws(LLMQError) {
        let copy = Array(bytes)
        var at = 0
        var ranges: [Range<Int>] = []
        while at < copy.count {
            guard copy[at] == UInt8(ascii: "*"), let (argc, afterHeader) = Self.number(copy, at + 1) else {
                throw .redis("cannot route a malformed command to the cluster (byte \(at)); this is a bug in llmq")
            }
            ranges.removeAll(keepingCapacity: true)
            var p = afterHeader
            for _ in 0..<argc {
                guard p < copy.count, copy[p] == UInt8(ascii: "$"), let (len, start) = Self.number(copy, p + 1), start + len + 2 <= copy.count else {
                    throw .redis("cannot route a malformed command to the cluster (byte \(p)); this is a bug in llmq")
                }
                ranges.append(start..<(start + len))
                p = start + len + 2
            }
            let slot: Int? = copy.withUnsafeBufferPointer { b in
                let arg = { (i: Int) in UnsafeBufferPointer(rebasing: b[ranges[i]]) }
                return ClusterSlot.keyIndex(argc: argc, argument: arg).map { ClusterSlot.of(arg($0)) }
            }
            try dispatch(copy[at..<p], slot: slot, home: home)
            at = p
        }
    }

    /// Parses a decimal number ending in CRLF at `i`; returns it and the index after the CRLF.
    private static func number(_ b: [UInt8], _ i: Int) -> (Int, Int)? {
        var n = 0
        var j = i
        while j < b.count, b[j] >= 0x30, b[j] <= 0x39 {
            n = n * 10 + Int(b[j] - 0x30)
            j += 1
        }
        guard j > i, j + 1 < b.count, b[j] == 0x0D, b[j + 1] == 0x0A else { return nil }
        return (n, j + 2)
    }

    // MARK: reading

    private func takeReady() -> RedisReply? {
        guard readyHead < ready.count else { return nil }
        let r = ready[readyHead]
        readyHead += 1
        if readyHead == ready.count {
            ready.removeAll(keepingCapacity: true)
            readyHead = 0
        }
        return r
    }

    private func flushAll(home: RedisConnection) throws(LLMQError) {
        guard unflushed else { return }
        unflushed = false
        try home.nodeFlush()
        for c in nodes.values { try c.nodeFlush() }
    }

    func reply(home: RedisConnection) throws(LLMQError) -> RedisReply {
        if let r = takeReady() { return r }
        guard head < pending.count else {
            // Nothing asked: a subscriber reading what is pushed to it.
            return try current(home: home).nodeReply()
        }
        try flushAll(home: home)
        let p = pending[head]
        head += 1
        let r = try connection(p.node, home: home).nodeReply()
        if Redirect(r, current: p.node) != nil { return try followRedirects(first: p, reply: r, home: home) }
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        }
        return r
    }

    private func followRedirects(first: Pending, reply: RedisReply, home: RedisConnection) throws(LLMQError) -> RedisReply {
        // Read every reply still in flight so that the resent commands' replies cannot interleave with them.
        var items = [(first, reply)]
        while head < pending.count {
            let q = pending[head]
            head += 1
            items.append((q, try connection(q.node, home: home).nodeReply()))
        }
        pending.removeAll(keepingCapacity: true)
        head = 0
        for (q, r) in items {
            var reply = r
            var hops = 0
            var at = q.node
            while hops < Self.maxRedirects, let redirect = Redirect(reply, current: at) {
                hops += 1
                let c = try connection(redirect.node, home: home)
                if !redirect.ask, topology.moved(slot: redirect.slot, to: redirect.node) {
                    // The map changed: learn all of it now, not one MOVED per slot.
                    try? Self.learn(topology, from: c, at: redirect.node)
                    map = topology.map
                }
                if redirect.ask { try c.nodeAppend([Array("ASKING".utf8)]) }
                try q.command.withUnsafeBufferPointer { b throws(LLMQError) in try c.nodeAppendEncoded(b) }
                if redirect.ask { _ = try c.nodeReply() }
                reply = try c.nodeReply()
                at = redirect.node
                currentAddress = at
            }
            ready.append(reply)
        }
        return takeReady()!
    }

    /// A connection to each master, for what must visit every node (SCAN).
    func masters(home: RedisConnection) throws(LLMQError) -> [RedisConnection] {
        if map.version != topology.version { map = topology.map }
        var out: [RedisConnection] = []
        for address in map.nodes {
            // Not `home`: it routes; these must stay on their node.
            if address != homeAddress { out.append(try connection(address, home: home)) } else {
                if plainHome == nil { plainHome = try RedisConnection(url.node(address), connectTimeout: 2) }
                out.append(plainHome!)
            }
        }
        return out
    }

    func bufferedReply(home: RedisConnection) throws(LLMQError) -> RedisReply? {
        if let r = takeReady() { return r }
        return try current(home: home).nodeBufferedReply()
    }

    func waitReply(timeout: Double, home: RedisConnection) throws(LLMQError) -> RedisReply? {
        if let r = takeReady() { return r }
        return try current(home: home).nodeWaitReply(timeout: timeout)
    }
}

extension RedisConnection {
    /// Whether this connection routes over a Redis Cluster.
    public var isCluster: Bool { router != nil }

    /// Connections to every master (just this one on a single server), for commands that
    /// must visit each node, such as SCAN. They belong to this connection: same thread rules.
    public func masters() throws(LLMQError) -> [RedisConnection] {
        guard let router else { return [self] }
        return try router.guarded { r throws(LLMQError) in try r.masters(home: self) }
    }

    /// Connects to the first node of a cluster that answers: the masters the process knows, then the seeds.
    /// Returns the last failed context when none answers, so the caller reports its error.
    static func connectAnyNode(of url: RedisURL, _ tv: timeval) -> (UnsafeMutablePointer<redisContext>?, RedisURL.HostPort?) {
        let topology = ClusterTopology.shared(for: url.cluster ?? [])
        var last: UnsafeMutablePointer<redisContext>?
        for address in topology.candidates {
            if let l = last { redisFree(l) }
            last = redisConnectWithTimeout(address.host, Int32(address.port), tv)
            if let c = last, c.pointee.err == 0 { return (c, address) }
        }
        topology.invalidate()
        return (last, nil)
    }
}
