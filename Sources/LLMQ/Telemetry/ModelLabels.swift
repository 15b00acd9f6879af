/// The `model` label of the request metrics, bounded by the configuration.
///
/// A job may name any `PROVIDER/MODEL`, so labelling with what jobs say would
/// let producers create series without end in every worker's exposition. The
/// label is the model only when the configuration names it: a route, a target
/// model of that provider in some route, or the provider's Azure deployment;
/// every other model is labelled `other`.
public struct ModelLabels: Sendable {
    /// The label of models the configuration does not name.
    public static let other = "other"

    private let routes: Set<String>
    private let models: [String: Set<String>]

    public init(config: FarmConfig) {
        routes = Set(config.routes.keys)
        var models: [String: Set<String>] = [:]
        for targets in config.routes.values {
            for t in targets {
                guard let slash = t.firstIndex(of: "/") else { continue }
                models[String(t[..<slash]), default: []].insert(String(t[t.index(after: slash)...]))
            }
        }
        for (name, p) in config.providers {
            if let d = p.deployment { models[name, default: []].insert(d) }
        }
        self.models = models
    }

    /// `model` when it is a configured route name or a configured model of `provider`, else `other`.
    public func label(provider: String, model: String) -> String {
        if routes.contains(model) || models[provider]?.contains(model) == true { return model }
        return Self.other
    }
}
