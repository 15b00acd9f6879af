/// A queue mode: the `{MODE}` hash tag of the queue keys and the `mode` field of a job.
///
/// A struct with static members rather than a closed enum, because the
/// configuration may add modes. It validates nothing by itself: the config
/// loader checks names, and the wire format is the raw string.
public struct Mode: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible,
    ExpressibleByStringLiteral, Codable, CodingKeyRepresentable
{
    public let rawValue: String

    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    public init(_ rawValue: String) {
        self.rawValue = rawValue
    }

    public init(stringLiteral value: String) {
        self.rawValue = value
    }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    /// So that a `[Mode: T]` codes as a map keyed by mode names, as the YAML config has it.
    public var codingKey: any CodingKey { Key(stringValue: rawValue) }

    public init?<K: CodingKey>(codingKey: K) {
        self.rawValue = codingKey.stringValue
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public static let chat = Mode("chat")
    public static let complete = Mode("complete")
    public static let embed = Mode("embed")

    public var description: String { rawValue }

    public static func < (a: Mode, b: Mode) -> Bool { a.rawValue < b.rawValue }
}
