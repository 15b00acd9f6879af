import Foundation
import Hummingbird

/// Any JSON value a request body holds, for the wire formats whose bodies the sim
/// reads loosely (Anthropic, Gemini, Cohere, Ollama, TGI), checking only what the
/// real servers insist on.
enum SimValue: Decodable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([SimValue])
    case object([String: SimValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([SimValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: SimValue].self))
        }
    }

    subscript(key: String) -> SimValue? { if case .object(let o) = self { o[key] } else { nil } }

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var array: [SimValue]? { if case .array(let a) = self { a } else { nil } }
    var object: [String: SimValue]? { if case .object(let o) = self { o } else { nil } }
    var int: Int? { if case .number(let d) = self, d.rounded() == d { Int(d) } else { nil } }
    var number: Double? { if case .number(let d) = self { d } else { nil } }
    var bool: Bool? { if case .bool(let b) = self { b } else { nil } }

    /// Words in every string inside, for token counts that follow the prompt.
    var wordCount: Int {
        switch self {
        case .string(let s): SimText.wordCount(s)
        case .array(let a): a.reduce(0) { $0 + $1.wordCount }
        case .object(let o): o.values.reduce(0) { $0 + $1.wordCount }
        default: 0
        }
    }

    static func decode(_ bytes: ByteBuffer) throws(SimAPIError) -> SimValue {
        do {
            return try JSONDecoder().decode(SimValue.self, from: Data(bytes.readableBytesView))
        } catch {
            throw SimAPIError(status: .badRequest, message: "The request body is not valid JSON.", type: "invalid_request_error", code: "invalid_json")
        }
    }
}
