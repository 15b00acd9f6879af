import CHiredis
import Foundation

/// A bare hiredis client for tests: it pushes jobs and reads keys the way an
/// outside producer would, without going through llmq's own Redis code.
public final class PlainRedis: @unchecked Sendable {  // used by one test thread at a time
    private let ctx: UnsafeMutablePointer<redisContext>

    public init(port: Int) throws {
        guard let c = redisConnect("127.0.0.1", Int32(port)), c.pointee.err == 0 else {
            throw TestFailure("cannot connect to redis-server on 127.0.0.1:\(port)")
        }
        ctx = c
    }

    deinit { redisFree(ctx) }

    public enum Reply: Equatable, CustomStringConvertible {
        case string(String), int(Int), null, array([Reply]), error(String)
        public var string: String? { if case .string(let s) = self { s } else { nil } }
        public var int: Int? { if case .int(let i) = self { i } else { nil } }
        public var array: [Reply]? { if case .array(let a) = self { a } else { nil } }
        public var description: String {
            switch self {
            case .string(let s): "\"\(s)\""
            case .int(let i): "\(i)"
            case .null: "nil"
            case .array(let a): "[\(a.map(\.description).joined(separator: ", "))]"
            case .error(let e): "ERR(\(e))"
            }
        }
    }

    @discardableResult
    public func run(_ args: String...) throws -> Reply { try run(args) }

    @discardableResult
    public func run(_ args: [String]) throws -> Reply { try run(bytes: args.map { Array($0.utf8) }) }

    /// A command whose arguments are raw bytes (for payloads that are not UTF-8).
    @discardableResult
    public func run(bytes datas: [[UInt8]]) throws -> Reply {
        let args = datas.map { String(decoding: $0.prefix(16), as: UTF8.self) }
        var ptrs: [UnsafePointer<CChar>?] = []
        var bufs: [UnsafeMutablePointer<CChar>] = []
        for d in datas {
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, d.count))
            for (i, b) in d.enumerated() { p[i] = CChar(bitPattern: b) }
            bufs.append(p)
            ptrs.append(UnsafePointer(p))
        }
        defer { bufs.forEach { $0.deallocate() } }
        let lens = datas.map(\.count)
        let raw = ptrs.withUnsafeMutableBufferPointer { pp in
            lens.withUnsafeBufferPointer { lp in redisCommandArgv(ctx, Int32(datas.count), pp.baseAddress, lp.baseAddress) }
        }
        guard let raw else { throw TestFailure("redis command \(args.first ?? "") failed: connection error") }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Reads the next pushed message (after SUBSCRIBE), waiting up to `timeout` seconds.
    public func next(timeout: Double) throws -> Reply? {
        var raw: UnsafeMutableRawPointer?
        if redisGetReplyFromReader(ctx, &raw) == REDIS_OK, let r = raw {
            defer { freeReplyObject(r) }
            return Self.convert(r.assumingMemoryBound(to: redisReply.self))
        }
        var pfd = pollfd(fd: ctx.pointee.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        guard redisBufferRead(ctx) == REDIS_OK else { throw TestFailure("subscriber connection lost") }
        raw = nil
        if redisGetReplyFromReader(ctx, &raw) == REDIS_OK, let r = raw {
            defer { freeReplyObject(r) }
            return Self.convert(r.assumingMemoryBound(to: redisReply.self))
        }
        return nil
    }

    static func convert(_ r: UnsafeMutablePointer<redisReply>) -> Reply {
        let p = r.pointee
        switch p.type {
        case REDIS_REPLY_STRING, REDIS_REPLY_STATUS:
            return .string(String(decoding: UnsafeRawBufferPointer(start: p.str, count: p.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: p.str, count: p.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .int(Int(p.integer))
        case REDIS_REPLY_ARRAY: return .array((0..<p.elements).map { convert(p.element[$0]!) })
        default: return .null
        }
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
