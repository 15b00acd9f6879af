/// One Redis reply.
public enum RedisReply: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int)
    case null
    case array([RedisReply])
    case error(String)

    public var bytes: [UInt8]? {
        switch self {
        case .string(let b): b
        case .status(let s): Array(s.utf8)
        default: nil
        }
    }
    public var string: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }
    public var integer: Int? {
        switch self {
        case .integer(let i): i
        case .string(let b): Int(String(decoding: b, as: UTF8.self))
        default: nil
        }
    }
    public var array: [RedisReply]? { if case .array(let a) = self { a } else { nil } }
    public var isNull: Bool { self == .null }
}
