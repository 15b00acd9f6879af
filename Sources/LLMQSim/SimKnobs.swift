import Foundation
import Hummingbird

/// How the sim answers one request. Knobs are `name=value` directives, comma separated,
/// written in the model name (`sim:tokens=5,delay_ms=2`, or a whole name like `tokens=5`)
/// and in the `X-Sim` header; the header wins knob by knob.
struct SimKnobs: Sendable {
    static let names = [
        "tokens", "delay_ms", "first_ms", "dim", "fault", "retry_after", "after_tokens", "fail_times", "key", "tool", "auth",
        "retry_hint", "number", "fault_429", "fault_503", "cut", "truncate", "malformed", "seed",
    ]

    var tokens = 20
    var delayMilliseconds = 0
    var firstMilliseconds = 0
    var dimensions: Int?
    var fault: SimFault?
    var retryAfter: Int?
    /// Tokens sent before a mid-stream fault (`stall`, `disconnect`, `malformed`) strikes.
    var afterTokens = 2
    /// Only the first N requests with the same `key` get the fault (500 if none is named).
    var failTimes: Int?
    var key = ""
    /// Answer with a call of this tool instead of text.
    var tool: String?
    /// The API key the request must carry (in the header its wire format uses); others get 401.
    var auth: String?
    /// Sent as is in `Retry-After` and `retry-after-ms` (and Gemini's `retryDelay`) of an error:
    /// `99999999999`, `nan`, `inf`, `-5` … for clients that must clamp what they are told.
    var retryHint: String?
    /// The JSON number `bad_usage` and `bad_index` put in place of counts and indexes.
    var number = "1e300"
    /// Per-request chances of a fault, drawn when no `fault` is named (an upstream storm):
    /// 429, 503, a cut connection, a truncated body, a malformed event.
    var chances = Chances()
    /// Seeds the draws; with the `key` knob and the request's rank among that key's requests,
    /// it makes a storm repeatable.
    var seed: UInt64 = 0

    struct Chances: Sendable {
        var rateLimited = 0.0
        var unavailable = 0.0
        var cut = 0.0
        var truncate = 0.0
        var malformed = 0.0

        var any: Bool { rateLimited + unavailable + cut + truncate + malformed > 0 }

        /// The fault a uniform draw `u` in 0..<1 lands on.
        func fault(at u: Double) -> SimFault? {
            var edge = 0.0
            for (chance, fault) in [(rateLimited, SimFault.rateLimited), (unavailable, .overloaded), (cut, .disconnect),
                                    (truncate, .truncate), (malformed, .malformed)] {
                edge += chance
                if u < edge { return fault }
            }
            return nil
        }
    }

    init() {}

    init(model: String, headers: HTTPFields) throws(SimAPIError) {
        if let directives = Self.directives(inModel: model) {
            try self.apply(directives, from: "model name")
        }
        if let header = headers.first(where: { $0.name.canonicalName == "x-sim" })?.value {
            try self.apply(header[...], from: "X-Sim header")
        }
    }

    /// The fault this request asks for before the `fail_times` budget is looked at.
    var requestedFault: SimFault? {
        self.fault ?? (self.failTimes == nil ? nil : .serverError)
    }

    /// Directives follow the first colon; a suffix without `=` (as in `llama3:8b`) is part of
    /// the model's own name.
    static func directives(inModel model: String) -> Substring? {
        guard let colon = model.firstIndex(of: ":") else {
            return model.contains("=") ? model[...] : nil
        }
        let rest = model[model.index(after: colon)...]
        return rest.contains("=") ? rest : nil
    }

    private mutating func apply(_ directives: Substring, from source: String) throws(SimAPIError) {
        for part in directives.split(separator: ",") {
            let directive = part.trimmingCharacters(in: .whitespaces)
            if directive.isEmpty { continue }
            guard let equals = directive.firstIndex(of: "=") else {
                throw .invalidKnob("Sim knob '\(directive)' in the \(source) has no value; write name=value.")
            }
            let name = directive[..<equals].trimmingCharacters(in: .whitespaces)
            let value = directive[directive.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            try self.set(name, to: value, from: source)
        }
    }

    private mutating func set(_ name: String, to value: String, from source: String) throws(SimAPIError) {
        switch name {
        case "tokens": self.tokens = try Self.number(value, knob: name, in: 0...100_000)
        case "delay_ms": self.delayMilliseconds = try Self.number(value, knob: name, in: 0...60_000)
        case "first_ms": self.firstMilliseconds = try Self.number(value, knob: name, in: 0...600_000)
        case "dim": self.dimensions = try Self.number(value, knob: name, in: 1...65_536)
        case "retry_after": self.retryAfter = try Self.number(value, knob: name, in: 0...86_400)
        case "after_tokens": self.afterTokens = try Self.number(value, knob: name, in: 0...100_000)
        case "fail_times": self.failTimes = try Self.number(value, knob: name, in: 0...1_000_000)
        case "key": self.key = value
        case "retry_hint":
            guard !value.isEmpty, value.count <= 32, value.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }) else {
                throw .invalidKnob("Sim knob 'retry_hint' takes a number or a word (letters, digits, + - .), up to 32 characters.")
            }
            self.retryHint = value
        case "number":
            switch value {
            case "2^64": self.number = "18446744073709551616"
            case "-2^63": self.number = "-9223372036854775808"
            case "2^63": self.number = "9223372036854775808"
            default:
                guard !value.isEmpty, value.count <= 32, value.allSatisfy({ $0.isNumber || "+-.eE".contains($0) }) else {
                    throw .invalidKnob("Sim knob 'number' takes a JSON number (1e300, -1, 0.5) or 2^64, 2^63, -2^63.")
                }
                self.number = value
            }
        case "fault_429": self.chances.rateLimited = try Self.chance(value, knob: name)
        case "fault_503": self.chances.unavailable = try Self.chance(value, knob: name)
        case "cut": self.chances.cut = try Self.chance(value, knob: name)
        case "truncate": self.chances.truncate = try Self.chance(value, knob: name)
        case "malformed": self.chances.malformed = try Self.chance(value, knob: name)
        case "seed":
            guard let seed = UInt64(value) else { throw .invalidKnob("Sim knob 'seed' must be a whole number from 0, not '\(value)'.") }
            self.seed = seed
        case "auth": self.auth = value
        case "tool":
            guard !value.isEmpty else { throw .invalidKnob("Sim knob 'tool' needs a tool name.") }
            self.tool = value
        case "fault":
            guard let fault = SimFault(rawValue: value) else {
                let known = SimFault.allCases.map(\.rawValue).joined(separator: ", ")
                throw .invalidKnob("Unknown value '\(value)' for sim knob 'fault'; use one of: \(known).")
            }
            self.fault = fault
        default:
            let known = Self.names.joined(separator: ", ")
            throw .invalidKnob("Unknown sim knob '\(name)' in the \(source); known knobs: \(known).")
        }
    }

    private static func chance(_ value: String, knob: String) throws(SimAPIError) -> Double {
        guard let p = Double(value), p >= 0, p <= 1 else {
            throw .invalidKnob("Sim knob '\(knob)' is a chance from 0 to 1, not '\(value)'.")
        }
        return p
    }

    private static func number(_ value: String, knob: String, in range: ClosedRange<Int>) throws(SimAPIError) -> Int {
        guard let number = Int(value), range.contains(number) else {
            throw .invalidKnob(
                "Sim knob '\(knob)' must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(value)'."
            )
        }
        return number
    }
}
