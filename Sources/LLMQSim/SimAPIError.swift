import Hummingbird

/// An error answered the way OpenAI answers it: a status, an optional `Retry-After`, and
/// `{"error":{"message","type","param","code"}}`.
struct SimAPIError: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String
    var type: String
    var code: String?
    var retryAfter: Int?
    /// Sent as is in `Retry-After` and `retry-after-ms` instead of `retryAfter` (the `retry_hint` knob).
    var retryHint: String?

    /// The retry headers: `retry_hint` verbatim in both, else `Retry-After` in whole seconds.
    var retryHeaders: HTTPFields {
        var headers: HTTPFields = [:]
        if let hint = self.retryHint {
            headers[.retryAfter] = hint
            headers[.init("retry-after-ms")!] = hint
        } else if let retryAfter = self.retryAfter {
            headers[.retryAfter] = String(retryAfter)
        }
        return headers
    }

    var response: Response {
        let body: SimJSON = [
            "error": [
                "message": .string(self.message),
                "type": .string(self.type),
                "param": nil,
                "code": self.code.map(SimJSON.string) ?? nil,
            ]
        ]
        var headers: HTTPFields = [.contentType: "application/json"]
        headers.append(contentsOf: self.retryHeaders)
        return Response(status: self.status, headers: headers, body: ResponseBody(byteBuffer: body.buffer))
    }

    static func invalidKnob(_ message: String) -> SimAPIError {
        SimAPIError(status: .badRequest, message: message, type: "invalid_request_error", code: "invalid_sim_knob")
    }
}
