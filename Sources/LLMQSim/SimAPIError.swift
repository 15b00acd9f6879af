import Hummingbird

/// An error answered the way OpenAI answers it: a status, an optional `Retry-After`, and
/// `{"error":{"message","type","param","code"}}`.
struct SimAPIError: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String
    var type: String
    var code: String?
    var retryAfter: Int?

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
        if let retryAfter = self.retryAfter {
            headers[.retryAfter] = String(retryAfter)
        }
        return Response(status: self.status, headers: headers, body: ResponseBody(byteBuffer: body.buffer))
    }

    static func invalidKnob(_ message: String) -> SimAPIError {
        SimAPIError(status: .badRequest, message: message, type: "invalid_request_error", code: "invalid_sim_knob")
    }
}
