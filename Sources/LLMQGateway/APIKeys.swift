import Foundation
import LLMQ

/// The gateway's API keys, each naming a tenant, kept only as SHA-256 digests.
///
/// Sources: `gateway.keys_file` and the variable named by `gateway.keys_env`, both one key per line
/// (or comma) as `KEY TENANT [MAX_CONCURRENT]`; KEY may be written `sha256:HEX` so no secret is stored.
/// None configured means the gateway is open: every request is the tenant `default`.
public struct APIKeys: Sendable {
    public struct Entry: Sendable, Equatable {
        public var tenant: String
        /// Concurrent requests this key's tenant may run; nil uses `gateway.tenant_concurrency`.
        public var maxConcurrent: Int?
    }

    private var byDigest: [String: Entry] = [:]

    public var isOpen: Bool { byDigest.isEmpty }
    public var count: Int { byDigest.count }

    public init() {}

    public static func load(_ config: GatewayConfig, environment: [String: String] = ProcessInfo.processInfo.environment) throws(LLMQError) -> APIKeys {
        var keys = APIKeys()
        if let path = config.keysFile {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .configuration("cannot read gateway.keys_file \(path); check the path, or remove the key to run without keys")
            }
            try keys.add(text: String(decoding: data, as: UTF8.self), source: path)
        }
        if let name = config.keysEnv, let text = environment[name], !text.isEmpty {
            try keys.add(text: text, source: "$\(name)")
        }
        return keys
    }

    public mutating func add(text: String, source: String) throws(LLMQError) {
        for (n, raw) in text.split(whereSeparator: { $0 == "\n" || $0 == "," }).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if parts.isEmpty { continue }
            guard parts.count == 2 || parts.count == 3 else {
                throw .configuration("\(source): entry \(n + 1) must be KEY TENANT [MAX_CONCURRENT]")
            }
            // The job's `tenant` field takes 1-64 characters: a longer one would make every job of the key invalid_job.
            guard Job.isValidTenant(parts[1]) else {
                throw .configuration("\(source): entry \(n + 1): tenant \"\(parts[1])\" must be 1-64 of A-Z a-z 0-9 . _ : -")
            }
            var limit: Int?
            if parts.count == 3 {
                guard let l = Int(parts[2]), l >= 0 else { throw .configuration("\(source): entry \(n + 1): MAX_CONCURRENT must be a whole number") }
                limit = l
            }
            let digest = parts[0].hasPrefix("sha256:") ? String(parts[0].dropFirst(7)).lowercased() : SHA256.hex(Array(parts[0].utf8))
            guard digest.count == 64 else { throw .configuration("\(source): entry \(n + 1): a sha256: key needs 64 hex digits") }
            byDigest[digest] = Entry(tenant: parts[1], maxConcurrent: limit)
        }
    }

    /// The entry of a presented key, or nil when it is not one of ours.
    public func lookup(key: String) -> Entry? {
        byDigest[SHA256.hex(Array(key.utf8))]
    }

    /// `sha256:HEX` of a key, for writing keys files without secrets.
    public static func digest(_ key: String) -> String { "sha256:" + SHA256.hex(Array(key.utf8)) }
}
