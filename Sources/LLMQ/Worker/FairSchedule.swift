/// What a `schedule: fair` fetch passes to `Scripts.fairTake`: the tenants' weights and limits.
/// Built once per worker from the configuration; the scripts keep no configuration in Redis, so
/// workers agree as long as their files do.
public struct FairSchedule: Sendable {
    public let tenants: [String: TenantConfig]
    public let fallback: TenantConfig
    /// Queued jobs one fetch sorts into tenant lists at most, so one call stays short under a flood.
    public var sortBudget = 256
    /// The script's tail arguments: default weight and limit, then (tenant, weight, limit) per
    /// configured tenant, and the jobs without a tenant ("") with the default weight and no limit.
    let tail: [[UInt8]]

    public init(tenants: [String: TenantConfig], fallback: TenantConfig) {
        self.tenants = tenants
        self.fallback = fallback
        var t: [[UInt8]] = [Array(String(fallback.weight).utf8), Array(String(fallback.maxConcurrent).utf8)]
        for (name, c) in tenants.sorted(by: { $0.key < $1.key }) {
            t += [Array(name.utf8), Array(String(c.weight).utf8), Array(String(c.maxConcurrent).utf8)]
        }
        t += [[], Array(String(fallback.weight).utf8), Array("0".utf8)]
        tail = t
    }

    public init(config: FarmConfig) {
        self.init(tenants: config.tenants, fallback: config.tenantDefault)
    }

    /// The tenant bucket the take script sorts `raw` under (for jobs found in an in-flight list
    /// without the script's reply, after a lost connection): a string `tenant`, else "".
    public static func bucket(of raw: [UInt8]) -> String {
        guard case .object(let o)? = try? JSONValue.parse(raw), case .string(let t)? = o["tenant"] else { return "" }
        return t
    }

    /// The arguments of one take of up to `want` jobs from `family` into `worker`'s in-flight list.
    public func takeCommand(_ family: QueueFamily, worker: String, want: Int, into buf: inout [UInt8]) {
        Scripts.appendEval(
            Scripts.fairTake,
            keys: [family.queue, family.inflight(worker: worker), family.running, family.runningBy(worker: worker), family.blocked],
            args: [Array(family.base.utf8), Array(String(want).utf8), Array(String(sortBudget).utf8), Scripts.wakeMarker] + tail,
            to: &buf)
    }
}

extension FairSchedule {
    /// The metric label of a tenant bucket: the tenant when configured, `none` for "", else `other`.
    public func label(_ bucket: String) -> String {
        bucket.isEmpty ? "none" : tenants[bucket] != nil ? bucket : ModelLabels.other
    }
}
