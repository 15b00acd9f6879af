/// A failure the sim injects on request, named by the `fault` knob.
enum SimFault: String, Sendable, CaseIterable {
    case rateLimited = "429"
    case quotaExceeded = "quota"
    case badRequest = "400"
    case unauthorized = "401"
    case notFound = "404"
    case serverError = "500"
    case overloaded = "503"
    /// Anthropic's overload: 529 with an overloaded_error body.
    case overloaded529 = "529"
    /// Sends some tokens, then nothing, holding the connection until the client leaves.
    case stall
    /// Sends some tokens, then closes the connection without finishing the response.
    case disconnect
    /// Sends some tokens, then an event that is not JSON, then carries on.
    case malformed
    /// Sends some tokens, then the format's own in-stream error event, and ends the body.
    case errorEvent = "error_event"
    /// Gemini only: the prompt is blocked for safety (a 200 whose stream says promptFeedback.blockReason).
    case safety
    /// Sends some tokens, then ends the body properly but without the format's end marker.
    case truncate
    /// Token counts in usage become the `number` knob's value (1e300, -1, 2^64 …).
    case badUsage = "bad_usage"
    /// Indexes (tool-call, content-block, embedding) become the `number` knob's value.
    case badIndex = "bad_index"
    /// Sends some tokens, then one line that never ends (bytes without a newline, until the client leaves).
    case endlessLine = "endless_line"
    /// Sends some tokens, then an SSE event of endless `data:` lines that never gets its blank line
    /// (NDJSON formats: as `endless_line`).
    case endlessData = "endless_data"
    /// Sends some tokens, then repeats the last content event until the client leaves: endless
    /// tool-call arguments with `tool=NAME` (new tool calls where a format sends whole calls), text otherwise.
    case endlessArgs = "endless_args"
    /// Answers 200 with `Content-Encoding: gzip` and a small gzip body that inflates to 256 MiB of zeros.
    case gzipBomb = "gzip_bomb"

    /// The error answered instead of a body, or nil for faults that happen mid-body.
    func apiError(model: String, retryAfter: Int?) -> SimAPIError? {
        switch self {
        case .rateLimited:
            let seconds = retryAfter ?? 1
            return SimAPIError(
                status: .tooManyRequests,
                message: "Rate limit reached for \(model) (simulated). Please try again in \(seconds)s.",
                type: "requests",
                code: "rate_limit_exceeded",
                retryAfter: seconds
            )
        case .quotaExceeded:
            return SimAPIError(
                status: .tooManyRequests,
                message: "You exceeded your current quota, please check your plan and billing details (simulated).",
                type: "insufficient_quota",
                code: "insufficient_quota",
                retryAfter: retryAfter
            )
        case .badRequest:
            return SimAPIError(
                status: .badRequest,
                message: "Invalid request (simulated).",
                type: "invalid_request_error",
                code: nil
            )
        case .unauthorized:
            return SimAPIError(
                status: .unauthorized,
                message: "Incorrect API key provided (simulated).",
                type: "invalid_request_error",
                code: "invalid_api_key"
            )
        case .notFound:
            return SimAPIError(
                status: .notFound,
                message: "The model `\(model)` does not exist or you do not have access to it (simulated).",
                type: "invalid_request_error",
                code: "model_not_found"
            )
        case .serverError:
            return SimAPIError(
                status: .internalServerError,
                message: "The server had an error while processing your request (simulated).",
                type: "server_error",
                code: nil,
                retryAfter: retryAfter
            )
        case .overloaded:
            return SimAPIError(
                status: .serviceUnavailable,
                message: "The engine is currently overloaded, please try again later (simulated).",
                type: "server_error",
                code: nil,
                retryAfter: retryAfter
            )
        case .overloaded529:
            return SimAPIError(
                status: .init(code: 529, reasonPhrase: "Overloaded"),
                message: "Overloaded (simulated).",
                type: "overloaded_error",
                code: nil,
                retryAfter: retryAfter
            )
        case .stall, .disconnect, .malformed, .errorEvent, .safety, .truncate, .badUsage, .badIndex, .endlessLine, .endlessData,
            .endlessArgs, .gzipBomb:
            return nil
        }
    }
}
