import CCurl
import Foundation

/// Runs one request at a time on the calling thread, for senders that own a thread
/// and have nothing else to do while they wait (the OTLP span exporter). It shares
/// `Transfer` with `HTTPEngine`, so timeouts, header caps and the result are the same.
///
/// Thread rules: one thread at a time (it owns one curl easy handle).
public final class BlockingHTTPClient {
    private let easy = CurlEasy()

    public init() {}

    /// Sends `request`; the body of a 2xx answer goes to `decoder` (discarded when nil).
    public func perform(_ request: HTTPRequest, decoder: StreamDecoder? = nil) -> HTTPResult {
        easy.reset()
        let transfer = Transfer(request: request, decoder: decoder ?? DiscardingDecoder(), output: nil, token: TransferToken())
        transfer.configure(easy)
        let code = curl_easy_perform(easy.handle)
        transfer.complete(code: code)
        transfer.easy = nil
        return transfer.result
    }
}

/// Takes a body and keeps nothing of it.
final class DiscardingDecoder: StreamDecoder {
    func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool { true }
    func finish() {}
}
