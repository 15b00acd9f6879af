import Foundation

/// The readiness check of a managed engine: GET its `ready_url`, which must
/// answer 2xx and, for a model listing (`/v1/models`, `/models`, `/api/tags`),
/// list every model the routes send to it (an engine that is up but has not
/// loaded the model yet would fail every job).
///
/// Thread rules: one thread at a time (it owns a blocking HTTP client).
final class EngineProbe {
    let url: String
    let models: [String]
    private let client = BlockingHTTPClient()

    init(url: String, models: [String]) {
        self.url = url
        self.models = models
    }

    /// nil when the engine is ready; else why not, for the log.
    func check() -> String? {
        let body = BodyCollector()
        let result = client.perform(HTTPRequest(method: "GET", url: url, timeout: 3, idleTimeout: 3, connectTimeout: 1), decoder: body)
        guard result.completed else { return "GET \(url) failed (nothing answers yet)" }
        guard result.isHTTPSuccess else { return "GET \(url) answered HTTP \(result.status)" }
        let path = URL(string: url)?.path ?? ""
        guard !models.isEmpty, path.hasSuffix("/models") || path.hasSuffix("/api/tags") else { return nil }
        let listed = Self.listedModels(body.body)
        let missing = models.filter { m in !listed.contains(m) && !listed.contains(m + ":latest") }
        return missing.isEmpty ? nil : "GET \(url) does not list \(missing.joined(separator: ", ")) yet (it lists \(listed.sorted().joined(separator: ", ")))"
    }

    /// Model names in an OpenAI listing (`data[].id`) or Ollama's (`models[].name`, `models[].model`).
    static func listedModels(_ bytes: [UInt8]) -> Set<String> {
        guard let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return [] }
        var out = Set<String>()
        for entry in (json["data"] as? [[String: Any]]) ?? [] { if let id = entry["id"] as? String { out.insert(id) } }
        for entry in (json["models"] as? [[String: Any]]) ?? [] {
            for k in ["name", "model"] { if let n = entry[k] as? String { out.insert(n) } }
        }
        return out
    }
}
