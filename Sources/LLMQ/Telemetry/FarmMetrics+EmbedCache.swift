import CoreMetrics

/// The embedding cache's metrics (see `EmbeddingCache`), by provider: a bounded label,
/// the configured providers. Listed with the rest in `MetricCatalog`.
extension FarmMetrics {
    /// One embed call that used the cache: inputs answered from Redis, inputs sent upstream,
    /// and the vector bytes the cache answered instead of the provider.
    public static func embedCache(provider: String, hits: Int, misses: Int, savedBytes: Int) {
        Counter(label: "llmq_embed_cache_hits_total", dimensions: [("provider", provider)]).increment(by: hits)
        Counter(label: "llmq_embed_cache_misses_total", dimensions: [("provider", provider)]).increment(by: misses)
        Counter(label: "llmq_embed_cache_saved_bytes_total", dimensions: [("provider", provider)]).increment(by: savedBytes)
    }

    /// Registers the counters at 0 for every provider, so they read 0 rather than missing before the first embed job.
    public static func primeEmbedCache(providers: [String]) {
        for p in providers { embedCache(provider: p, hits: 0, misses: 0, savedBytes: 0) }
    }
}
