import Hummingbird

/// One step of a response body the sim plays out; a body is a list of them, decided
/// before the first byte is sent.
enum SimStep: Sendable {
    case write(ByteBuffer)
    case pause(milliseconds: Int)
    /// Send nothing more, but keep the connection until the client leaves or the hang ends.
    case hang(seconds: Int)
    /// Close the connection without finishing the response.
    case cut
    /// Finish the response here, properly, skipping the steps after it.
    case end
    /// Write the buffer again and again, `times` times or until the client leaves.
    case flood(ByteBuffer, times: Int)
    /// Answer with `SimGzipBomb.body` and `Content-Encoding: gzip` instead of the steps.
    case gzipBomb

    /// The steps with usage counts (`bad_usage`) or indexes (`bad_index`) replaced by `number`.
    static func corrupting(_ steps: [SimStep], fault: SimFault?, number: String) -> [SimStep] {
        guard let keys = SimNumbers.keys(for: fault) else { return steps }
        return steps.map { step in
            guard case .write(let buffer) = step else { return step }
            return .write(ByteBuffer(string: SimNumbers.replace(String(buffer: buffer), keys: keys, with: number)))
        }
    }
}

/// Puts out-of-range numbers where a format carries counts or indexes.
enum SimNumbers {
    static let usageKeys = [
        "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens", "cache_creation_input_tokens",
        "cache_read_input_tokens", "promptTokenCount", "candidatesTokenCount", "totalTokenCount", "thoughtsTokenCount",
        "prompt_eval_count", "eval_count", "generated_tokens", "input_length",
    ]

    static func keys(for fault: SimFault?) -> [String]? {
        switch fault {
        case .badUsage?: usageKeys
        case .badIndex?: ["index"]
        default: nil
        }
    }

    /// `text` with the number after each `"KEY":` replaced by `literal`.
    static func replace(_ text: String, keys: [String], with literal: String) -> String {
        var out = text
        for key in keys {
            let needle = "\"\(key)\":"
            var result = ""
            var rest = out[...]
            while let r = rest.range(of: needle) {
                result += rest[..<r.upperBound]
                var i = r.upperBound
                while i < rest.endIndex, rest[i] == "-" || rest[i].isNumber { i = rest.index(after: i) }
                if i > r.upperBound { result += literal }
                rest = rest[i...]
            }
            result += rest
            out = result
        }
        return out
    }
}
