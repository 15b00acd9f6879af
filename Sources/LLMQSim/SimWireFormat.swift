import Foundation
import Hummingbird

/// The provider wire formats the sim speaks, chosen by path as the real servers are:
/// `/v1/chat/completions` (OpenAI, Azure under `/openai/deployments/…`), `/v1/messages`
/// (Anthropic), `/v1beta/models/…` (Gemini), `/v2/…` (Cohere), `/api/…` (Ollama),
/// `/generate_stream` (TGI). Each answers errors with its own body and headers.
enum SimWireFormat: String, Sendable {
    case openAI, anthropic, gemini, cohere, ollama, tgi

    /// The header that carries the API key, and how to read the key out of it.
    func presentedKey(_ request: Request) -> String? {
        let headers = request.headers
        func header(_ name: String) -> String? { headers.first { $0.name.canonicalName == name }?.value }
        switch self {
        case .openAI, .cohere, .tgi, .ollama:
            if let v = header("api-key") { return v }  // Azure
            guard let v = header("authorization") else { return nil }
            return v.hasPrefix("Bearer ") ? String(v.dropFirst(7)) : v
        case .anthropic: return header("x-api-key")
        case .gemini: return header("x-goog-api-key") ?? request.uri.queryParameters.get("key")
        }
    }

    /// Checks the `auth=KEY` knob: the request must carry KEY where this format carries keys.
    /// The refusal echoes the key that came, as some providers do, so clients can prove they redact it.
    func checkAuth(_ knobs: SimKnobs, request: Request) throws(SimAPIError) {
        guard let expected = knobs.auth else { return }
        let presented = presentedKey(request)
        guard presented != expected else { return }
        throw SimAPIError(
            status: .unauthorized, message: "Incorrect API key provided: \(presented ?? "(none)") (simulated).",
            type: "invalid_request_error", code: "invalid_api_key")
    }

    func response(_ e: SimAPIError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        headers.append(contentsOf: e.retryHeaders)
        let body: SimJSON
        let status = e.status
        switch self {
        case .openAI:
            return e.response
        case .anthropic:
            let type: String
            switch status.code {
            case 400: type = "invalid_request_error"
            case 401: type = "authentication_error"
            case 403: type = "permission_error"
            case 404: type = "not_found_error"
            case 413: type = "request_too_large"
            case 429: type = "rate_limit_error"
            case 529: type = "overloaded_error"
            default: type = "api_error"
            }
            if status.code == 429, let r = e.retryAfter {
                let reset = Date().addingTimeInterval(Double(r))
                headers[.init("anthropic-ratelimit-requests-reset")!] = ISO8601DateFormatter().string(from: reset)
                headers[.init("anthropic-ratelimit-requests-remaining")!] = "0"
            }
            body = ["type": "error", "error": ["type": .string(type), "message": .string(e.message)], "request_id": "req_sim"]
        case .gemini:
            var code = status.code
            var statusName: String
            var details: [SimJSON] = []
            switch code {
            case 400: statusName = "INVALID_ARGUMENT"
            case 401:
                // Gemini answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID.
                code = 400
                statusName = "INVALID_ARGUMENT"
                details = [["@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"]]
            case 403: statusName = "PERMISSION_DENIED"
            case 404: statusName = "NOT_FOUND"
            case 429:
                statusName = "RESOURCE_EXHAUSTED"
                let quotaID = e.code == "insufficient_quota" ? "GenerateRequestsPerDayPerProjectPerModel-FreeTier" : "GenerateRequestsPerMinutePerProjectPerModel"
                details = [["@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [["quotaMetric": "generativelanguage.googleapis.com/generate_content_requests", "quotaId": .string(quotaID)]]]]
                if let r = e.retryHint ?? e.retryAfter.map(String.init) {
                    details.append(["@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": .string("\(r)s")])
                }
                // Gemini says when to retry in the body, not in a header.
                headers[.retryAfter] = nil
                headers[.init("retry-after-ms")!] = nil
            case 503: statusName = "UNAVAILABLE"
            default: statusName = "INTERNAL"
            }
            body = ["error": ["code": .int(code), "message": .string(e.message), "status": .string(statusName), "details": .array(details)]]
            return Response(status: .init(code: code), headers: headers, body: ResponseBody(byteBuffer: body.buffer))
        case .cohere:
            body = ["id": "sim-error", "message": .string(e.message)]
        case .ollama:
            body = ["error": .string(e.message)]
        case .tgi:
            let type = status.code == 429 || status.code == 503 ? "overloaded" : status.code < 500 ? "validation" : "generation"
            body = ["error": .string(e.message), "error_type": .string(type)]
        }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: body.buffer))
    }
}
