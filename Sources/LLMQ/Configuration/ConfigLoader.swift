import Foundation
import Yams

/// Reads a `FarmConfig` from a YAML (or JSON) file, then the environment
/// (`LLMQ_REDIS_URL`, `LLMQ_PREFIX`, `LLMQ_WORKERS`, `LLMQ_LOG_LEVEL`,
/// `LLMQ_LOG_FORMAT`, `LLMQ_DRAIN_TIMEOUT_S`), and validates the result.
public enum ConfigLoader {
    public static func load(path: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws(LLMQError) -> FarmConfig {
        var config = FarmConfig()
        if let path {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .configuration("cannot read the configuration file \(path); check the path given to --config")
            }
            do {
                let text = String(decoding: data, as: UTF8.self)
                if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                    config = FarmConfig()
                } else {
                    config = try YAMLDecoder().decode(FarmConfig.self, from: text)
                }
            } catch let e as DecodingError {
                throw .configuration("\(path): \(describe(e))")
            } catch {
                throw .configuration("\(path): not valid YAML: \(error)")
            }
        }
        try applyEnvironment(&config, environment)
        try validate(config, source: path ?? "the defaults")
        return config
    }

    static func applyEnvironment(_ c: inout FarmConfig, _ env: [String: String]) throws(LLMQError) {
        if let v = env["LLMQ_REDIS_URL"], !v.isEmpty { c.redis = v }
        if let v = env["LLMQ_PREFIX"], !v.isEmpty { c.prefix = v }
        if let v = env["LLMQ_LOG_LEVEL"], !v.isEmpty { c.logLevel = v }
        if let v = env["LLMQ_LOG_FORMAT"], !v.isEmpty { c.logFormat = v }
        if let v = env["LLMQ_WORKERS"], !v.isEmpty {
            guard let n = Int(v) else { throw .configuration("LLMQ_WORKERS=\(v) is not a whole number") }
            c.workers = n
        }
        if let v = env["LLMQ_DRAIN_TIMEOUT_S"], !v.isEmpty {
            guard let n = Double(v) else { throw .configuration("LLMQ_DRAIN_TIMEOUT_S=\(v) is not a number") }
            c.drainTimeoutS = n
        }
        if let v = env["LLMQ_HTTP_PORT"], !v.isEmpty {
            guard let n = Int(v) else { throw .configuration("LLMQ_HTTP_PORT=\(v) is not a whole number") }
            c.httpPort = n
        }
        // The OpenTelemetry SDKs' standard variables, so collectors configured for them work unchanged.
        if let v = env["OTEL_EXPORTER_OTLP_ENDPOINT"], !v.isEmpty { c.tracing.otlpEndpoint = v }
        if let v = env["OTEL_SERVICE_NAME"], !v.isEmpty { c.tracing.serviceName = v }
    }

    public static func validate(_ c: FarmConfig, source: String) throws(LLMQError) {
        func bad(_ key: String, _ why: String) -> LLMQError { .configuration("\(source): \(key) \(why)") }
        _ = try RedisURL(c.redis)
        let check = RangeCheck(bad: bad)
        try check.int("workers", c.workers, 1...256)
        try check.int("max_attempts", c.maxAttempts, JobParser.Limits.maxAttempts)
        try check.double("drain_timeout_s", c.drainTimeoutS, 0...86_400)
        try check.int("result_ttl_s", c.resultTTLS, 1...31_536_000, unit: "seconds (Redis refuses an expiry of 0)")
        try check.int("log_ttl_s", c.logTTLS, 1...31_536_000, unit: "seconds (Redis refuses an expiry of 0)")
        try check.int("max_job_bytes", c.maxJobBytes, 256...536_870_912, unit: "bytes (Redis holds values up to 512 MiB)")
        try check.int("max_output_bytes", c.maxOutputBytes, 1...1_073_741_824, unit: "bytes")
        try check.double("retry_base_s", c.retryBaseS, 0.001...3600, unit: "seconds")
        try check.atLeast("retry_max_s", c.retryMaxS, "retry_base_s", c.retryBaseS, max: 86_400)
        try check.double("restart_backoff_s", c.restartBackoffS, 0.001...3600, unit: "seconds")
        try check.atLeast("restart_backoff_max_s", c.restartBackoffMaxS, "restart_backoff_s", c.restartBackoffS, max: 86_400)
        try check.int("delayed_batch", c.delayedBatch, 1...10_000)
        try check.int("http_threads", c.httpThreads, 1...16)
        try check.double("lease_ttl_s", c.leaseTTLS, 1...300, unit: "seconds")
        guard !c.prefix.isEmpty, !c.prefix.contains(where: { $0 == "{" || $0 == "}" || $0 == " " }) else {
            throw bad("prefix", "must be non-empty without braces or spaces, got \"\(c.prefix)\"")
        }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(c.logLevel) else {
            throw bad("log_level", "must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard ["text", "json"].contains(c.logFormat) else { throw bad("log_format", "must be text or json") }
        guard ["none", "replica"].contains(c.durability) else { throw bad("durability", "must be none or replica, got \"\(c.durability)\"") }
        guard c.httpPort >= 0 && c.httpPort <= 65535 else { throw bad("http_port", "must be from 0 (off) to 65535, got \(c.httpPort)") }
        guard !c.httpHost.isEmpty else { throw bad("http_host", "must be an address such as 0.0.0.0 or 127.0.0.1") }
        try TracingConfig.validate(c.tracing, bad: bad)
        guard !c.modes.isEmpty else { throw bad("modes", "must name at least one mode") }
        for (mode, m) in c.modes {
            guard Job.isValidID(mode.rawValue) else { throw bad("modes.\(mode)", "is not a valid mode name (A-Z a-z 0-9 . _ : -)") }
            guard m.concurrency >= 1 && m.concurrency <= 10000 else {
                throw bad("modes.\(mode).concurrency", "must be from 1 to 10000, got \(m.concurrency)")
            }
            try check.int("modes.\(mode).shards", m.shards, 1...1024)
        }
        for (name, t) in c.tenants.map({ ($0.key, $0.value) }) + [("tenant_default", c.tenantDefault)] {
            let key = name == "tenant_default" ? name : "tenants.\(name)"
            guard name == "tenant_default" || Job.isValidTenant(name) else { throw bad(key, "is not a valid tenant (1-64 of A-Z a-z 0-9 . _ : -)") }
            try check.int("\(key).weight", t.weight, 1...1000)
            try check.int("\(key).max_concurrent", t.maxConcurrent, 0...1_000_000)
        }
        for (name, p) in c.providers {
            guard !name.contains("/") else { throw bad("providers.\(name)", "must not contain a slash") }
            guard ProviderKind(rawValue: p.kind) != nil else {
                throw bad("providers.\(name).kind", "\"\(p.kind)\" is not one of \(ProviderKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if let u = p.baseURL, !(u.hasPrefix("http://") || u.hasPrefix("https://")) {
                throw bad("providers.\(name).base_url", "must start with http:// or https://, got \(u)")
            }
            try check.double("providers.\(name).timeout_s", p.timeoutS, 0.001...86_400, unit: "seconds")
            try check.double("providers.\(name).idle_timeout_s", p.idleTimeoutS, 0.001...86_400, unit: "seconds")
            try check.double("providers.\(name).connect_timeout_s", p.connectTimeoutS, 0.001...3600, unit: "seconds")
            try validateProvider(name, p, bad)
        }
        for (route, targets) in c.routes {
            guard !targets.isEmpty else { throw bad("routes.\(route)", "must list at least one PROVIDER/MODEL") }
            for t in targets {
                guard let slash = t.firstIndex(of: "/"), c.providers[String(t[..<slash])] != nil else {
                    throw bad("routes.\(route)", "target \"\(t)\" must be PROVIDER/MODEL with a provider defined under providers")
                }
            }
        }
        try FarmConfig.validateEmbedCaches(c, source: source)
    }

    /// The provider keys that depend on the kind: presets, limits and the shared cooldown.
    static func validateProvider(_ name: String, _ p: ProviderConfig, _ bad: @escaping (String, String) -> LLMQError) throws(LLMQError) {
        let kind = ProviderKind(rawValue: p.kind)!
        let key = "providers.\(name)"
        let check = RangeCheck(bad: bad)
        if let n = p.maxConcurrency, n < 1 || n > 100_000 {
            throw bad("\(key).max_concurrency", "must be at least 1 and at most 100000 (leave it out for no limit), got \(n)")
        }
        if let n = p.maxTokens { try check.int("\(key).max_tokens", n, JobParser.Limits.maxTokens) }
        try check.double("\(key).cooldown_s", p.cooldownS, 0...86_400, unit: "seconds (0 turns it off)")
        try check.atLeast("\(key).cooldown_max_s", p.cooldownMaxS, "cooldown_s", p.cooldownS, max: 86_400)
        try check.int("\(key).failures_before_cooldown", p.failuresBeforeCooldown, 0...1_000_000, unit: "(0 never)")
        if let l = p.launch { try LaunchConfig.validate("\(key).launch", l, provider: p, bad: bad) }
        if p.deployment != nil && kind != .azure { throw bad("\(key).deployment", "applies to kind azure only") }
        if p.apiVersion != nil && kind != .azure && kind != .anthropic {
            throw bad("\(key).api_version", "applies to kinds azure (api-version) and anthropic (anthropic-version) only")
        }
        if kind == .azure && p.baseURL == nil {
            throw bad("\(key).base_url", "is needed for kind azure: your resource's endpoint, e.g. https://NAME.openai.azure.com")
        }
        let hasKey = p.apiKeyEnv != nil || p.apiKeyFile != nil
        if kind == .azure && !hasKey && !p.headers.keys.contains(where: { ["authorization", "api-key"].contains($0.lowercased()) }) {
            throw bad(key, "of kind azure needs an API key: set api_key_env or api_key_file (or an Authorization header for Entra ID tokens)")
        }
        if kind.needsKeyByDefault && kind != .azure && p.baseURL == nil && !hasKey {
            throw bad(key, "of kind \(kind.rawValue) needs an API key: set api_key_env (a variable's name) or api_key_file")
        }
    }

    /// Range checks that name the key and the file, and refuse NaN and infinities (YAML spells them `.nan`, `.inf`).
    struct RangeCheck {
        let bad: (String, String) -> LLMQError

        func int(_ key: String, _ v: Int, _ range: ClosedRange<Int>, unit: String = "") throws(LLMQError) {
            guard range.contains(v) else { throw bad(key, "must be from \(range.lowerBound) to \(range.upperBound)\(unit.isEmpty ? "" : " " + unit), got \(v)") }
        }

        func double(_ key: String, _ v: Double, _ range: ClosedRange<Double>, unit: String = "") throws(LLMQError) {
            guard v.isFinite, range.contains(v) else {
                throw bad(key, "must be a number from \(Self.text(range.lowerBound)) to \(Self.text(range.upperBound))\(unit.isEmpty ? "" : " " + unit), got \(v)")
            }
        }

        /// A cap that must not be below the setting it caps (`retry_max_s` and `retry_base_s`), nor above `max` seconds.
        func atLeast(_ key: String, _ v: Double, _ lowerKey: String, _ lower: Double, max: Double) throws(LLMQError) {
            guard v.isFinite, v >= lower else { throw bad(key, "must be at least \(lowerKey) (\(Self.text(lower))), got \(v)") }
            guard v <= max else { throw bad(key, "must be at most \(Self.text(max)) seconds, got \(v)") }
        }

        static func text(_ d: Double) -> String { d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : "\(d)" }
    }

    private static func describe(_ e: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String { p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") }
        switch e {
        case .keyNotFound(let k, let ctx): return "\(path(ctx.codingPath + [k])) is missing"
        case .typeMismatch(let t, let ctx): return "\(path(ctx.codingPath)) must be \(t)"
        case .valueNotFound(let t, let ctx): return "\(path(ctx.codingPath)) must be \(t)"
        case .dataCorrupted(let ctx): return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}
