/// The skeleton every streaming decoder shares. It frames the body into SSE events
/// (or NDJSON lines), hands each one's data to `event(_:)`, and when the body ends
/// fails the job unless the stream reached its proper end.
///
/// A provider's decoder subclasses it and keeps only its wire format: `event(_:)`,
/// `streamEnd` (what ends its stream), and `framing` when the body is NDJSON.
/// Events are decoded by a direct (vtable) call: nothing is allocated per event.
///
/// Thread rules: engine thread only (see `EventWriter`).
public class StreamEventDecoder: ResponseDecoder {
    /// How the body is cut into events.
    enum Framing { case sse, ndjson }

    let writer: EventWriter
    let provider: String
    private var sse: SSEParser?
    private var lines: NDJSONParser?
    public internal(set) var finishReason: String?
    public internal(set) var usage = Usage()
    var failed: LLMQError?
    /// Not redacted: `ProviderRegistry.redact` does that where text leaves the process.
    public var failure: LLMQError? { failed }
    public internal(set) var complete = false

    public init(writer: EventWriter, provider: String) {
        self.writer = writer
        self.provider = provider
        switch Self.framing {
        case .sse: sse = SSEParser()
        case .ndjson: lines = NDJSONParser()
        }
    }

    /// How this stream's body is cut into events.
    class var framing: Framing { .sse }

    /// What ends the stream, for the "closed the stream before …" failure.
    class var streamEnd: String { "its end" }

    /// Whether a stream that closed before `streamEnd` still counts as complete.
    var completeWithoutEnd: Bool { false }

    /// Decodes one event's data; returns false (with `failed` set) to abort the transfer.
    func event(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        preconditionFailure("\(type(of: self)) must override event(_:)")
    }

    public final func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let ok = lines != nil ? lines!.feed(bytes) { self.event($0) } : sse!.feed(bytes) { _, data in self.event(data) }
        if !ok && failed == nil { failed = overflowError }
        return ok
    }

    /// The failure for a stream that broke a parser's cap.
    private var overflowError: LLMQError? {
        let cap = "\(SSEParser.defaultLimit >> 20) MiB"
        if lines?.overflowed == true {
            return LLMQError(.upstreamError, "\(provider) sent an NDJSON line longer than \(cap) without its end; the transfer was cut", retryable: true)
        }
        switch sse?.overflow {
        case .line?: return LLMQError(.upstreamError, "\(provider) sent an SSE line longer than \(cap) without its end; the transfer was cut", retryable: true)
        case .event?: return LLMQError(.upstreamError, "\(provider) sent an SSE event whose data ran past \(cap) without the blank line that ends it; the transfer was cut", retryable: true)
        case nil: return nil
        }
    }

    public final func finish() {
        if lines != nil { _ = lines!.finish { self.event($0) } } else { _ = sse!.finish { _, data in self.event(data) } }
        if !complete && failed == nil {
            if completeWithoutEnd { complete = true } else {
                failed = LLMQError(.upstreamError, "\(provider) closed the stream before \(Self.streamEnd)", retryable: true)
            }
        }
    }

    /// A tool-call or content-block index (0 when absent); nil, with `failed` set, when the
    /// upstream sent something that is no index (negative, fractional, 1e300, past `EventWriter.maxToolCalls`).
    final func blockIndex(_ s: JSONScanner, _ r: Range<Int>?) -> Int? {
        guard let r else { return 0 }
        if let i = s.index(r), i < EventWriter.maxToolCalls { return i }
        if failed == nil {
            failed = LLMQError(.upstreamError, "\(provider) sent index \(String(decoding: s.raw(r).prefix(40), as: UTF8.self)), outside 0..<\(EventWriter.maxToolCalls); the stream was cut", retryable: true)
        }
        return nil
    }

    /// Fails the stream on an event that is not the JSON the provider promised; returns false.
    final func malformed(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        let unit = Self.framing == .sse ? "event" : "line"
        failed = LLMQError(.upstreamError, "\(provider) sent a malformed stream \(unit): \(String(decoding: data.prefix(120), as: UTF8.self))", retryable: true)
        return false
    }
}
