import CHiredis
import Foundation

/// One connection to Redis, owning its `redisContext`.
///
/// On a `redis+cluster://` URL the same object routes each command to the
/// master owning its key's slot (see `ClusterRouter`), so callers need not know
/// whether they talk to one server or a cluster.
///
/// Thread rules: not thread-safe; one thread uses a connection at a time (the
/// publisher's, a fetcher's, or a caller that keeps it in a `Mutex`).
public final class RedisConnection {
    private var ctx: UnsafeMutablePointer<redisContext>
    public let url: RedisURL
    /// Set on a cluster URL: the other nodes and the routing.
    private(set) var router: ClusterRouter?

    public init(_ url: RedisURL, connectTimeout: Double = 5) throws(LLMQError) {
        self.url = url
        let tv = timeval(tv_sec: Int(connectTimeout), tv_usec: Int((connectTimeout - Double(Int(connectTimeout))) * 1e6))
        let c: UnsafeMutablePointer<redisContext>?
        let address = try SentinelResolver.target(for: url, connectTimeout: connectTimeout)  // the master now, for redis+sentinel://
        var clusterNode: RedisURL.HostPort?
        if let path = address.unixPath {
            c = redisConnectUnixWithTimeout(path, tv)
        } else if url.cluster != nil {
            (c, clusterNode) = Self.connectAnyNode(of: url, tv)
        } else {
            c = redisConnectWithTimeout(address.host, Int32(address.port), tv)
        }
        guard let c else { throw .redis("cannot allocate a Redis connection to \(url)") }
        if c.pointee.err != 0 {
            let msg = Self.errorString(c)
            redisFree(c)
            throw .redis("cannot connect to Redis at \(url): \(msg); is redis-server running there?")
        }
        ctx = c
        redisEnableKeepAlive(c)
        if let password = url.password {
            let args = url.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
            let r = try command(args)
            if case .error(let e) = r {
                throw .redis("Redis at \(url) refused AUTH: \(e); check the password (and ACL user) in the URL or LLMQ_REDIS_PASSWORD")
            }
        }
        if url.database != 0 {
            let r = try command(["SELECT", String(url.database)])
            if case .error(let e) = r { throw .redis("Redis at \(url): SELECT \(url.database) failed: \(e)") }
        }
        if let clusterNode { router = try ClusterRouter(url: url, home: self, address: clusterNode) }
    }

    deinit { redisFree(ctx) }

    private static func errorString(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            let b = raw.bindMemory(to: CChar.self)
            return String(cString: b.baseAddress!)
        }
    }

    /// Socket timeout for blocking reads and writes; nil blocks forever.
    public func setTimeout(_ seconds: Double?) {
        if let router { return router.setTimeout(seconds, home: self) }
        nodeSetTimeout(seconds)
    }

    func nodeSetTimeout(_ seconds: Double?) {
        let s = seconds ?? 0
        let tv = timeval(tv_sec: Int(s), tv_usec: Int((s - Double(Int(s))) * 1e6))
        redisSetTimeout(ctx, tv)
    }

    public var fileDescriptor: Int32 { router?.fileDescriptor(home: self) ?? ctx.pointee.fd }

    var nodeFileDescriptor: Int32 { ctx.pointee.fd }

    /// Sends one command and waits for its reply.
    @discardableResult
    public func command(_ args: [String]) throws(LLMQError) -> RedisReply {
        try command(args.map { Array($0.utf8) })
    }

    @discardableResult
    public func command(_ args: [[UInt8]]) throws(LLMQError) -> RedisReply {
        try append(args)
        return try reply()
    }

    /// One command on this node alone, whatever the URL (cluster administration).
    func nodeCommand(_ args: [String]) throws(LLMQError) -> RedisReply {
        try nodeAppend(args.map { Array($0.utf8) })
        return try nodeReply()
    }

    /// Queues one command in the output buffer; `reply()` sends and reads.
    public func append(_ args: [[UInt8]]) throws(LLMQError) {
        if let router { return try router.guarded { r throws(LLMQError) in try r.append(args, home: self) } }
        try nodeAppend(args)
    }

    func nodeAppend(_ args: [[UInt8]]) throws(LLMQError) {
        let rc = Self.withArgv(args) { argc, argv, lens in redisAppendCommandArgv(ctx, argc, argv, lens) }
        if rc != REDIS_OK { throw .redis("Redis at \(url): \(Self.errorString(ctx))") }
    }

    public func append(_ args: [String]) throws(LLMQError) { try append(args.map { Array($0.utf8) }) }

    /// Queues already encoded RESP commands (see `RESP`).
    public func appendEncoded(_ bytes: UnsafeBufferPointer<UInt8>) throws(LLMQError) {
        guard !bytes.isEmpty else { return }
        if let router { return try router.guarded { r throws(LLMQError) in try r.appendEncoded(bytes, home: self) } }
        try nodeAppendEncoded(bytes)
    }

    func nodeAppendEncoded(_ bytes: UnsafeBufferPointer<UInt8>) throws(LLMQError) {
        let rc = bytes.withMemoryRebound(to: CChar.self) { redisAppendFormattedCommand(ctx, $0.baseAddress, $0.count) }
        if rc != REDIS_OK { throw .redis("Redis at \(url): \(Self.errorString(ctx))") }
    }

    /// Flushes the output buffer if needed and reads the next reply.
    public func reply() throws(LLMQError) -> RedisReply {
        if let router { return try router.guarded { r throws(LLMQError) in try r.reply(home: self) } }
        return try nodeReply()
    }

    func nodeReply() throws(LLMQError) -> RedisReply {
        var raw: UnsafeMutableRawPointer?
        let rc = redisGetReply(ctx, &raw)
        guard rc == REDIS_OK, let raw else {
            throw .redis("lost the connection to Redis at \(url): \(Self.errorString(ctx))")
        }
        let r = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return Self.convert(r)
    }

    /// Reads the next reply without converting it; returns the error text when Redis refused the command.
    /// For pipelines whose replies only matter when they are errors.
    public func skipReply() throws(LLMQError) -> String? {
        if let router {
            if case .error(let e) = try router.guarded({ r throws(LLMQError) in try r.reply(home: self) }) { return e }
            return nil
        }
        var raw: UnsafeMutableRawPointer?
        let rc = redisGetReply(ctx, &raw)
        guard rc == REDIS_OK, let raw else {
            throw .redis("lost the connection to Redis at \(url): \(Self.errorString(ctx))")
        }
        defer { freeReplyObject(raw) }
        let p = raw.assumingMemoryBound(to: redisReply.self).pointee
        guard p.type == REDIS_REPLY_ERROR else { return nil }
        return p.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: p.len), as: UTF8.self) } ?? ""
    }

    /// A reply already received, without reading from the socket; nil when none is buffered.
    public func bufferedReply() throws(LLMQError) -> RedisReply? {
        if let router { return try router.guarded { r throws(LLMQError) in try r.bufferedReply(home: self) } }
        return try nodeBufferedReply()
    }

    func nodeBufferedReply() throws(LLMQError) -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReplyFromReader(ctx, &raw) == REDIS_OK else {
            throw .redis("Redis at \(url): \(Self.errorString(ctx))")
        }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Reads what the socket has into the reply buffer (blocking per the timeout).
    public func readSocket() throws(LLMQError) {
        if let router { return try router.guarded { r throws(LLMQError) in try r.current(home: self).nodeReadSocket() } }
        try nodeReadSocket()
    }

    func nodeReadSocket() throws(LLMQError) {
        if redisBufferRead(ctx) != REDIS_OK {
            throw .redis("lost the connection to Redis at \(url): \(Self.errorString(ctx))")
        }
    }

    /// The next reply if one arrives within `timeout` seconds, else nil. For
    /// subscribers, which wait on a socket that answers only when published to.
    public func waitReply(timeout: Double) throws(LLMQError) -> RedisReply? {
        if let router { return try router.guarded { r throws(LLMQError) in try r.waitReply(timeout: timeout, home: self) } }
        return try nodeWaitReply(timeout: timeout)
    }

    func nodeWaitReply(timeout: Double) throws(LLMQError) -> RedisReply? {
        if let r = try nodeBufferedReply() { return r }
        var pfd = pollfd(fd: ctx.pointee.fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, Int32(timeout * 1000))
        if n < 0 && errno != EINTR { throw .redis("poll on the Redis connection failed: \(String(cString: strerror(errno)))") }
        guard n > 0 else { return nil }
        try nodeReadSocket()
        return try nodeBufferedReply()
    }

    /// Writes the output buffer out, so this node starts working while another is read.
    func nodeFlush() throws(LLMQError) {
        var done: Int32 = 0
        repeat {
            if redisBufferWrite(ctx, &done) != REDIS_OK {
                throw .redis("lost the connection to Redis at \(url): \(Self.errorString(ctx))")
            }
        } while done == 0
    }

    static func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let p = r.pointee
        switch p.type {
        case REDIS_REPLY_STRING:
            return .string(p.str.map { Array(UnsafeRawBufferPointer(start: $0, count: p.len)) } ?? [])
        case REDIS_REPLY_STATUS:
            return .status(p.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: p.len), as: UTF8.self) } ?? "")
        case REDIS_REPLY_ERROR:
            return .error(p.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: p.len), as: UTF8.self) } ?? "")
        case REDIS_REPLY_INTEGER:
            return .integer(Int(p.integer))
        case REDIS_REPLY_ARRAY:
            var out: [RedisReply] = []
            out.reserveCapacity(p.elements)
            for i in 0..<p.elements { out.append(convert(p.element[i]!)) }
            return .array(out)
        default:
            return .null
        }
    }

    static func withArgv<R>(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        let lens = args.map(\.count)
        var ptrs: [UnsafeMutablePointer<CChar>] = []
        ptrs.reserveCapacity(args.count)
        for a in args {
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(a.count, 1))
            a.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { if let base = $0.baseAddress { p.update(from: base, count: a.count) } }
            }
            ptrs.append(p)
        }
        defer { ptrs.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = ptrs.map { UnsafePointer($0) }
        return argv.withUnsafeMutableBufferPointer { av in
            lens.withUnsafeBufferPointer { lb in body(Int32(args.count), av.baseAddress!, lb.baseAddress!) }
        }
    }
}
