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
                return LLMQError(.upstreamError, "the answer from \(provider) exceeded max_output_bytes (text and tool-call arguments) or \(EventWriter.maxToolCalls) tool calls and was cut; raise the limit or lower max_tokens")
            case .headerLimit:
                return LLMQError(.upstreamError, "\(provider) sent over \(HTTPResult.maxHeaderBytes >> 10) KiB of response headers; the transfer was cut", retryable: true)
            case .compressedBody:
                return LLMQError(.upstreamError, "\(provider) answered with a compressed body (Content-Encoding: \(r.headers["content-encoding"] ?? "?")) that llmq did not ask for and does not inflate; turn compression off in front of the provider", retryable: true)
            }
        }
        if let failure = r.transportFailure {
            switch failure {
            case .timedOut:
                return LLMQError(.timeout, "\(provider) did not answer in time (\(timeout.map { "\($0) s, " } ?? "")\(r.curlMessage))", retryable: true)
            case .unreachable:
                return LLMQError(.upstreamUnavailable, "cannot reach \(provider): \(r.curlMessage)", retryable: true)
            case .localResource:
                // `internal`, not an upstream code: the cooldown board ignores it, so a worker
                // short of descriptors never cools a healthy provider down for the farm.
                return LLMQError(.internal, "this worker ran out of local resources (file descriptors or memory) before reaching \(provider): \(r.curlMessage); raise the worker's descriptor limit (ulimit -n) or lower its concurrency", retryable: true)
            case .other:
                return LLMQError(.upstreamError, "\(provider) transfer failed: \(r.curlMessage)", retryable: true)
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

    /// Longest wait any upstream hint can ask for, seconds.
    public static let maxHint: Double = 3600

    /// A wait hint as a finite number of seconds within 0...`maxHint`; nil for NaN.
    /// Providers send what they like (`Retry-After: 99999999999`, `retry-after-ms: nan`);
    /// nothing downstream should ever see an infinite, negative or NaN wait.
    public static func clampHint(_ seconds: Double) -> Double? {
        guard !seconds.isNaN else { return nil }
        return min(max(seconds, 0), maxHint)
    }

    /// Seconds to wait from `Retry-After` (seconds or HTTP date) or the
    /// providers' reset headers (`x-ratelimit-reset-requests: 1.5s`, `6m0s`),
    /// clamped to 0...`maxHint`.
    public static func retryAfter(_ headers: [String: String]) -> Double? {
        rawRetryAfter(headers).flatMap(clampHint)
    }

    private static func rawRetryAfter(_ headers: [String: String]) -> Double? {
        if let v = headers["retry-after-ms"], let ms = Double(v.trimmingCharacters(in: .whitespaces)), !ms.isNaN { return ms / 1000 }
        if let v = headers["retry-after"] {
            if let s = Double(v.trimmingCharacters(in: .whitespaces)), !s.isNaN { return s }
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.timeZone = TimeZone(identifier: "GMT")
            f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            if let d = f.date(from: v) { return d.timeIntervalSinceNow }
        }
        // OpenAI-style resets are durations (`1.5s`, `6m0s`); the one whose budget is spent counts.
        let pairs = [("requests", "x-ratelimit-reset-requests"), ("tokens", "x-ratelimit-reset-tokens")]
        let spent = pairs.filter { headers["x-ratelimit-remaining-\($0.0)"] == "0" }.compactMap { headers[$0.1].flatMap(duration) }
        if let s = spent.max() { return s }
        var resets = (pairs.map(\.1) + ["x-ratelimit-reset"]).compactMap { headers[$0].flatMap(duration) }
        // Anthropic's resets are RFC 3339 times.
        for k in ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                  "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-output-tokens-reset"] {
            if let v = headers[k], let d = ISO8601DateFormatter().date(from: v) ?? fractionalISO8601(v) { resets.append(d.timeIntervalSinceNow) }
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

    /// Parses `1.5s`, `20ms`, `6m0s`, `1h2m3s` or a plain number of seconds; NaN is no duration.
    static func duration(_ text: String) -> Double? {
        guard text.utf8.count <= 64 else { return nil }
        if let s = Double(text) { return s.isNaN ? nil : s }
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
        return any && num.isEmpty && !total.isNaN ? total : nil
    }

    /// The human message inside a provider's error body, when there is one.
    public static func bodyMessage(_ body: [UInt8]) -> String? {
        guard !body.isEmpty else { return nil }
        if let v = try? JSONValue.parse(body) {
            let said = v["error"]?["message"]?.stringValue ?? v["error"]?.stringValue ?? v["message"]?.stringValue
                ?? v["detail"]?.stringValue ?? v.arrayValue?.first?["error"]?["message"]?.stringValue
            // A provider's words are quoted, not copied whole: an error body may be 64 KiB.
            if let said { return said.count > 1000 ? String(said.prefix(1000)) + "…" : said }
        }
        let text = String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}
