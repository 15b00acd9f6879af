/// Collects a whole JSON answer (embeddings) and reads it once it is complete,
/// with a provider-specific reader that writes the events.
///
/// Thread rules: engine thread only (see `EventWriter`).
final class JSONBodyDecoder: ResponseDecoder {
    /// Reads the validated body: writes events, returns usage, or throws what is wrong.
    typealias Reader = (JSONScanner, Range<Int>, EventWriter) throws(LLMQError) -> Usage

    let writer: EventWriter
    let provider: String
    let read: Reader
    /// How many inputs the job sent; an answer with more vectors is refused.
    let inputs: Int
    var body: [UInt8] = []
    private(set) var finishReason: String?
    private(set) var usage = Usage()
    private(set) var failure: LLMQError?
    private(set) var complete = false

    static let limit = 256 << 20

    init(writer: EventWriter, provider: String, inputs: Int, read: @escaping Reader) {
        self.writer = writer
        self.provider = provider
        self.inputs = inputs
        self.read = read
    }

    func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        body.append(contentsOf: bytes)
        if body.count < Self.limit { return true }
        failure = LLMQError(.upstreamError, "\(provider) sent an answer over \(Self.limit >> 20) MiB", retryable: false)
        return false
    }

    func finish() {
        body.withUnsafeBufferPointer { b in
            let s = JSONScanner(b)
            guard let top = s.validate(), s.isObject(top) else {
                failure = LLMQError(.upstreamError, "\(provider) sent an answer that is not a JSON object: \(String(decoding: b.prefix(120), as: UTF8.self))", retryable: true)
                return
            }
            do throws(LLMQError) {
                usage = try read(s, top, writer)
                if writer.embeddingCount > inputs {
                    throw LLMQError(.upstreamError, "\(provider) sent \(writer.embeddingCount) embeddings for \(inputs) inputs", retryable: true)
                }
            } catch {
                failure = error
            }
        }
        finishReason = "stop"
        complete = failure == nil
    }
}

/// Collects a small answer whole (model lists).
final class BodyCollector: StreamDecoder, @unchecked Sendable {  // engine thread until the transfer's continuation resumes
    var body: [UInt8] = []

    func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        body.append(contentsOf: bytes)
        return body.count < 16 << 20
    }

    func finish() {}
}
