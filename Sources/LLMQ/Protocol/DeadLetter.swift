import Foundation

/// The dead-list entry of a job that failed for good (Schemas/dead.schema.json).
public enum DeadLetter {
    public static func entry(raw: [UInt8], id: String?, error: LLMQError, attempt: Int, worker: String, now: Double) -> [UInt8] {
        var o: [String: JSONValue] = [
            "code": .string(error.code.rawValue), "reason": .string(error.message), "worker": .string(worker),
            "at": .double((now * 1000).rounded() / 1000), "attempt": .int(attempt),
        ]
        if let id { o["id"] = .string(id) }
        if let s = String(validating: raw, as: UTF8.self) {
            o["job"] = .string(s)
        } else {
            o["job_base64"] = .string(Data(raw).base64EncodedString())
        }
        return JSONValue.object(o).jsonBytes
    }
}
