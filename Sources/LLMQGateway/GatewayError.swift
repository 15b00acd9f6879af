import Hummingbird
import LLMQ

/// An error answered in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
/// with the HTTP status that OpenAI's SDKs turn into their own exception types.
public struct GatewayError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var type: String
    public var code: String
    public var message: String
    /// Seconds, sent as Retry-After with 429 and 503.
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, type: String, code: String, _ message: String, retryAfter: Int? = nil) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public static func badRequest(_ message: String, code: String = "bad_request") -> GatewayError {
        GatewayError(.badRequest, type: "invalid_request_error", code: code, message)
    }
    public static func unauthorized(_ message: String) -> GatewayError {
        GatewayError(.unauthorized, type: "authentication_error", code: "invalid_api_key", message)
    }
    public static func notFound(_ message: String, code: String = "not_found") -> GatewayError {
        GatewayError(.notFound, type: "invalid_request_error", code: code, message)
    }
    public static func unavailable(_ message: String, retryAfter: Int, code: String = "overloaded") -> GatewayError {
        GatewayError(.serviceUnavailable, type: "server_error", code: code, message, retryAfter: retryAfter)
    }

    /// The status and type for a protocol error code from a terminal `error` event.
    public static func fromEvent(code: String, message: String, retryAfter: Int? = nil) -> GatewayError {
        switch code {
        case "invalid_job", "bad_request": return GatewayError(.badRequest, type: "invalid_request_error", code: code, message)
        case "auth": return GatewayError(.forbidden, type: "permission_error", code: code, message)
        case "unknown_model": return GatewayError(.notFound, type: "invalid_request_error", code: code, message)
        case "rate_limited": return GatewayError(.tooManyRequests, type: "rate_limit_error", code: code, message, retryAfter: retryAfter ?? 1)
        case "upstream_unavailable": return GatewayError(.serviceUnavailable, type: "server_error", code: code, message, retryAfter: retryAfter ?? 1)
        case "timeout", "expired": return GatewayError(.gatewayTimeout, type: "timeout_error", code: code, message)
        case "cancelled": return GatewayError(.init(code: 499, reasonPhrase: "Client Closed Request"), type: "cancelled", code: code, message)
        case "upstream_error": return GatewayError(.badGateway, type: "server_error", code: code, message)
        default: return GatewayError(.internalServerError, type: "server_error", code: code, message)
        }
    }

    /// The body `{"error": {...}}`.
    public var json: [UInt8] {
        var out = Array(#"{"error":{"message":"#.utf8)
        JSONWriter.appendQuoted(message, to: &out)
        out += Array(#","type":"#.utf8)
        JSONWriter.appendQuoted(type, to: &out)
        out += Array(#","param":null,"code":"#.utf8)
        JSONWriter.appendQuoted(code, to: &out)
        out += Array("}}".utf8)
        return out
    }
}
