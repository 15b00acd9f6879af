import Foundation

/// The one builder of dead-list entries (`llmq:{MODE}:dead`, Schemas/dead.schema.json),
/// used by the runner, the reaper and anything else that buries a job.
///
/// An entry keeps the job's first `prefixBytes` bytes, its full size and its
/// SHA-256, never the whole job: a hostile job of control characters would
/// otherwise grow six-fold when escaped, and a dead list must stay small
/// however large the jobs were. Jobs within the prefix (nearly all of them)
/// are kept whole, so `llmq dead retry` can push them again.
public enum DeadLetter {
    /// Bytes of the job kept in an entry.
    public static let prefixBytes = 16 * 1024

    /// A dead-list entry as JSON bytes. Pure: the caller passes the clock.
    /// - Parameters:
    ///   - raw: the job exactly as taken from the queue.
    ///   - id: the job's id when one could be read.
    ///   - attempt: the attempt that ended the job (1 or more).
    ///   - now: Unix time in seconds.
    public static func entry(raw: [UInt8], id: String?, error: LLMQError, attempt: Int, worker: String, now: Double) -> [UInt8] {
        var o: [String: JSONValue] = [
            "code": .string(error.code.rawValue),
            "reason": .string(error.message),
            "worker": .string(worker),
            "at": .double(now.isFinite && now > 0 ? (now * 1000).rounded() / 1000 : 0.001),
            "attempt": .int(max(1, attempt)),
            "job_bytes": .int(raw.count),
            "job_sha256": .string(SHA256.hex(raw)),
        ]
        if let id, Job.isValidID(id) { o["id"] = .string(id) }
        let truncated: Bool
        if String(validating: raw, as: UTF8.self) != nil {
            let cut = utf8Boundary(raw, atMost: prefixBytes)
            o["job"] = .string(String(decoding: raw[..<cut], as: UTF8.self))
            truncated = cut < raw.count
        } else {
            let cut = min(raw.count, prefixBytes)
            o["job_base64"] = .string(Data(raw[..<cut]).base64EncodedString())
            truncated = cut < raw.count
        }
        o["job_truncated"] = .bool(truncated)
        return JSONValue.object(o).jsonBytes
    }

    /// The largest length at most `limit` that does not split a UTF-8 character of valid UTF-8 `bytes`.
    static func utf8Boundary(_ bytes: [UInt8], atMost limit: Int) -> Int {
        guard bytes.count > limit else { return bytes.count }
        var cut = limit
        while cut > 0 && bytes[cut] & 0xC0 == 0x80 { cut -= 1 }
        return cut
    }
}
