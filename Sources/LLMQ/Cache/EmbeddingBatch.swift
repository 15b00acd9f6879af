/// One embed job's inputs as the cache sees them for one call: which are answered from
/// Redis and which go upstream, and how the two are put back together in input order.
///
/// The upstream call's decoder writes into a scratch `EventWriter` (the engine thread
/// owns it during the transfer, the job's task after, as for any writer); `finish` reads
/// the vectors back from it and writes every input's `embedding` event to the request's own
/// writer, so subscribers see index 0, 1, 2 … whichever inputs were cached.
struct EmbeddingBatch {
    let cache: EmbeddingCache
    let scope: EmbeddingCache.Scope
    let keys: [String]
    /// Per input, the vector Redis held.
    let cached: [[UInt8]?]
    /// Budget bytes spent when it was looked up.
    let spent: Int
    let provider: String

    /// Inputs that go upstream, by position in the job.
    var misses: [Int] { cached.indices.filter { cached[$0] == nil } }

    /// Looks the job's inputs up; nil when Redis cannot be reached (the call then goes on without the cache).
    static func lookUp(_ job: Job, provider: ProviderEndpoint, model: String, scope: EmbeddingCache.Scope,
                       cache: EmbeddingCache) async -> EmbeddingBatch? {
        let keys = job.input.map { cache.key(provider: provider, model: model, extra: job.params.extra, input: $0) }
        guard let found = await cache.lookup(keys, scope: scope) else { return nil }
        return EmbeddingBatch(cache: cache, scope: scope, keys: keys, cached: found.vectors, spent: found.spent, provider: provider.name)
    }

    /// The job as sent upstream: only the inputs Redis did not hold.
    func upstreamJob(_ job: Job) -> Job {
        var j = job
        j.input = misses.map { job.input[$0] }
        return j
    }

    /// Writes every input's `embedding` event in input order, from the cache and from `scratch`
    /// (where the upstream answer for the misses was decoded), stores the fresh vectors, and
    /// counts hits, misses and bytes saved. Returns an error when the answer lacked a vector.
    func finish(scratch: EventWriter?, into writer: EventWriter) async -> LLMQError? {
        let misses = self.misses
        var fresh: [Int: [UInt8]] = [:]
        scratch?.takePending { payload, starts in
            for (i, start) in starts.enumerated() {
                let end = i + 1 < starts.count ? starts[i + 1] : payload.count
                let line = UnsafeBufferPointer(rebasing: payload[start..<(end - 1)])  // without its newline
                let s = JSONScanner(line)
                guard let top = s.validate(), s.isObject(top), let type = s.member(top, "type"), s.string(type) == "embedding",
                      let index = s.member(top, "index").flatMap(s.index), let vector = s.member(top, "vector") else { continue }
                fresh[index] = Array(s.raw(vector))
            }
        }
        if let gap = misses.indices.first(where: { fresh[$0] == nil }) {
            return LLMQError(.upstreamError, "\(provider) sent no vector for input \(misses[gap]) of the embed job", retryable: true)
        }
        var position: [Int: Int] = [:]
        for (i, m) in misses.enumerated() { position[m] = i }
        var saved = 0
        for i in cached.indices {
            let vector = cached[i] ?? fresh[position[i]!]!
            if cached[i] != nil { saved += vector.count }
            vector.withUnsafeBufferPointer { writer.embedding(index: i, vectorJSON: $0) }
        }
        if !misses.isEmpty {
            await cache.store(misses.enumerated().map { (key: keys[$0.element], vector: fresh[$0.offset]!) }, scope: scope, spent: spent)
        }
        FarmMetrics.embedCache(provider: provider, hits: cached.count - misses.count, misses: misses.count, savedBytes: saved)
        return nil
    }
}
