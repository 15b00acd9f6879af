/// What distinguishes the OpenAI-compatible kinds from each other: the default
/// address, the auth header, and (Azure) the path and `api-version`.
struct OpenAIPreset: Sendable {
    let kind: ProviderKind
    let deployment: String?
    let apiVersion: String

    /// Azure's current GA data-plane version; `api_version` overrides it.
    static let azureAPIVersion = "2024-10-21"

    init(kind: ProviderKind, config: ProviderConfig) {
        self.kind = kind
        deployment = config.deployment
        apiVersion = config.apiVersion ?? Self.azureAPIVersion
    }

    /// The API root when `base_url` is not given.
    var defaultBaseURL: String {
        switch kind {
        case .sim: OpenAIProvider.defaultSimURL
        case .vllm: "http://127.0.0.1:8000/v1"
        case .lmstudio: "http://127.0.0.1:1234/v1"
        case .llamacpp: "http://127.0.0.1:8080/v1"
        default: OpenAIProvider.defaultBaseURL
        }
    }

    func baseURL(configured: String?) -> String {
        // Azure endpoints are given as the resource root; a pasted `…/openai` suffix is dropped.
        trimmedBaseURL(configured, default: defaultBaseURL, dropping: kind == .azure ? ["/openai"] : [])
    }

    /// Azure's classic data plane: `/openai/deployments/NAME/…?api-version=…`. An endpoint
    /// given as `…/openai/v1` is Azure's v1 API, which takes OpenAI's paths and a model in the body.
    func url(base: String, path: String, model: String) -> String {
        guard kind == .azure, !base.hasSuffix("/openai/v1") else { return base + path }
        return "\(base)/openai/deployments/\(pathSegment(deployment ?? model))\(path)?api-version=\(apiVersion)"
    }

    /// Azure takes its key in `api-key`; everyone else in `Authorization: Bearer`.
    /// No key, no header: local servers need none.
    func authHeaders(apiKey: String?) -> [String] {
        kind == .azure ? keyHeader(apiKey, name: "api-key", scheme: "") : keyHeader(apiKey)
    }
}
