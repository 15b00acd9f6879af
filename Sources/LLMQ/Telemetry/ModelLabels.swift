/// Bounds the `model` label of request metrics to what the configuration
/// names: a job may say any `PROVIDER/anything`, and every distinct value would
/// otherwise become a series of its own in every worker's exposition.
public struct ModelLabels: Sendable {
    let known: Set<String>

    public init(config: FarmConfig) {
        var k = Set<String>()
        for (route, targets) in config.routes {
            k.insert(route)
            for t in targets { k.insert(t) }
        }
        known = k
    }

    /// The model as a label: configured routes and targets as they are, "other" for the rest.
    public func label(provider: String, model: String) -> String {
        known.contains("\(provider)/\(model)") || known.contains(model) ? model : "other"
    }
}
