import Foundation

/// Maps what an upstream answered (status, headers, body, transport error)
/// to the protocol's error codes, shared by every provider.
public enum UpstreamError {
    public static func classify(_ r: HTTPResult, provider: String, timeout: Double? = nil, idleTimeout: Double? = nil) -> LLMQError {
        if let a = r.aborted {
            switch a {
            case .cancelled: return LLMQError(.cancelled, "the request was cancelled")
            case .idleTimeout:
                return LLMQError(.timeout, "\(provider) sent nothing for \(idleTimeout.map { "\($0)" } ?? "too many") seconds (idle_timeout_s)", retryable: true)
            case .drain: return LLMQError(.workerLost, "the worker was drained before the request finished", retryable: true)
            case .decoder: return LLMQError(.upstreamError, "\(provider) sent a malformed stream", retryable: true)
            case .outputLimit:
                return LLMQError(.upstreamError, "the answer from \(provider) exceeded max_output_bytes and was cut; raise the limit or lower max_tokens")
            }
        }
        if r.curlCode != 0 {
            switch r.curlCode {
            case 28:
                return LLMQError(.timeout, "\(provider) did not answer in time (\(timeout.map { "\($0) s, " } ?? "")\(r.curlMessage))", retryable: true)
            case 6, 7:
                return LLMQError(.upstreamUnavailable, "cannot reach \(provider): \(r.curlMessage)", retryable: true)
            default:
                return LLMQError(.upstreamError, "\(provider) transfer failed: \(r.curlMessage) (curl \(r.curlCode))", retryable: true)
            }
        }
        let message = bodyMessage(r.errorBody)
        let said = message.map { ": \($0)" } ?? ""
        let raw = String(decoding: r.errorBody.prefix(4096), as: UTF8.self)
        if raw.contains("overloaded_error") || r.status == 529 {
            // Anthropic's overload (529, or overloaded_error in any body): busy, not broken; retried.
            return LLMQError(.upstreamUnavailable, "\(provider) is overloaded (HTTP \(r.status))\(said)", retryable: true, retryAfter: retryAfter(r.headers))
        }
        switch r.status {
        case 400, 413, 422:
            return LLMQError(.badRequest, "\(provider) rejected the request (HTTP \(r.status))\(said)")
        case 401, 403, 498:
            return LLMQError(.auth, "\(provider) refused the credentials (HTTP \(r.status))\(said); check the API key")
        case 402:
            return LLMQError(.rateLimited, "\(provider) wants payment (HTTP 402)\(said); add credit or raise the limit", retryable: false)
        case 404:
            return LLMQError(.unknownModel, "\(provider) does not know the model or path (HTTP 404)\(said)")
        case 408:
            return LLMQError(.timeout, "\(provider) timed out (HTTP 408)\(said)", retryable: true)
        case 429:
            if isQuotaSpent(raw) {
                return LLMQError(.rateLimited, "\(provider) quota is spent (HTTP 429)\(said); add credit or raise the limit", retryable: false)
            }
            return LLMQError(.rateLimited, "\(provider) is rate limiting (HTTP 429)\(said)", retryable: true, retryAfter: retryAfter(r.headers))
        case 502, 503, 504:
            return LLMQError(.upstreamUnavailable, "\(provider) is unavailable (HTTP \(r.status))\(said)", retryable: true, retryAfter: retryAfter(r.headers))
        case 500...599:
            return LLMQError(.upstreamError, "\(provider) failed (HTTP \(r.status))\(said)", retryable: true, retryAfter: retryAfter(r.headers))
        default:
            return LLMQError(.upstreamError, "\(provider) answered HTTP \(r.status)\(said)", retryable: r.status == 0)
        }
    }

    /// Seconds to wait from `Retry-After` (seconds or HTTP date) or the
    /// providers' reset headers (`x-ratelimit-reset-requests: 1.5s`, `6m0s`).
    public static func retryAfter(_ headers: [String: String]) -> Double? {
        if let v = headers["retry-after-ms"], let ms = Double(v) { return ms / 1000 }
        if let v = headers["retry-after"] {
            if let s = Double(v.trimmingCharacters(in: .whitespaces)) { return max(0, s) }
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.timeZone = TimeZone(identifier: "GMT")
            f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            if let d = f.date(from: v) { return max(0, d.timeIntervalSinceNow) }
        }
        // OpenAI-style resets are durations (`1.5s`, `6m0s`); the one whose budget is spent counts.
        let pairs = [("requests", "x-ratelimit-reset-requests"), ("tokens", "x-ratelimit-reset-tokens")]
        let spent = pairs.filter { headers["x-ratelimit-remaining-\($0.0)"] == "0" }.compactMap { headers[$0.1].flatMap(duration) }
        if let s = spent.max() { return s }
        var resets = (pairs.map(\.1) + ["x-ratelimit-reset"]).compactMap { headers[$0].flatMap(duration) }
        // Anthropic's resets are RFC 3339 times.
        for k in ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                  "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-output-tokens-reset"] {
            if let v = headers[k], let d = ISO8601DateFormatter().date(from: v) ?? fractionalISO8601(v) { resets.append(max(0, d.timeIntervalSinceNow)) }
        }
        return resets.max()
    }

    private static func fractionalISO8601(_ v: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: v)
    }

    /// Whether a 429's body says the account's quota or credit is spent (waiting will not help):
    /// OpenAI's insufficient_quota, Gemini's per-day quota.
    static func isQuotaSpent(_ body: String) -> Bool {
        body.contains("insufficient_quota") || body.contains("PerDay")
    }

    /// Parses `1.5s`, `20ms`, `6m0s`, `1h2m3s` or a plain number of seconds.
    static func duration(_ text: String) -> Double? {
        if let s = Double(text) { return s }
        var total = 0.0
        var num = ""
        var chars = Array(text)
        var i = 0
        var any = false
        while i < chars.count {
            let c = chars[i]
            if c.isNumber || c == "." { num.append(c); i += 1; continue }
            guard let v = Double(num) else { return nil }
            if c == "m" && i + 1 < chars.count && chars[i + 1] == "s" { total += v / 1000; i += 2 }
            else if c == "h" { total += v * 3600; i += 1 }
            else if c == "m" { total += v * 60; i += 1 }
            else if c == "s" { total += v; i += 1 }
            else { return nil }
            num = ""
            any = true
        }
        chars.removeAll()
        return any && num.isEmpty ? total : nil
    }

    /// The human message inside a provider's error body, when there is one.
    public static func bodyMessage(_ body: [UInt8]) -> String? {
        guard !body.isEmpty else { return nil }
        if let v = try? JSONValue.parse(body) {
            if let m = v["error"]?["message"]?.stringValue { return m }
            if let m = v["error"]?.stringValue { return m }
            if let m = v["message"]?.stringValue { return m }
            if let m = v["detail"]?.stringValue { return m }
            if let m = v.arrayValue?.first?["error"]?["message"]?.stringValue { return m }
        }
        let text = String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}

extension LLMQError {
    /// The error with every occurrence of `secret` (an API key) in its message replaced,
    /// so a provider echoing a key back never puts it on a channel or in a log.
    public func redacting(_ secret: String?) -> LLMQError {
        guard let secret, secret.count >= 4, message.contains(secret) else { return self }
        var e = self
        e.message = message.replacingOccurrences(of: secret, with: "[redacted]")
        return e
    }
}
