import Synchronization
import CCurl
import CCurlShim
import Foundation

/// One upstream request in flight.
///
/// Thread rules: created by a job's task, then touched only by the engine
/// thread until its continuation resumes. Hence `@unchecked Sendable`.
final class Transfer: @unchecked Sendable {
    let request: HTTPRequest
    let decoder: StreamDecoder
    let output: PendingOutput?
    let token: TransferToken
    var continuation: CheckedContinuation<HTTPResult, Never>?
    var easy: CurlEasy?
    var result = HTTPResult()
    var lastDataAt: UInt64 = 0
    private var sawHeadersStatus = false

    init(request: HTTPRequest, decoder: StreamDecoder, output: PendingOutput?, token: TransferToken) {
        self.request = request
        self.decoder = decoder
        self.output = output
        self.token = token
    }

    func configure(_ e: CurlEasy) {
        easy = e
        let me = Unmanaged.passUnretained(self).toOpaque()
        e.set(CURLOPT_URL, request.url)
        e.set(CURLOPT_NOSIGNAL, 1)
        e.set(CURLOPT_TCP_NODELAY, 1)
        e.set(CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout * 1000))
        if let t = request.timeout { e.set(CURLOPT_TIMEOUT_MS, max(1, Int(t * 1000))) }
        switch request.method {
        case "GET": e.set(CURLOPT_HTTPGET, 1)
        case "POST": e.setBody(request.body)
        default:
            e.set(CURLOPT_CUSTOMREQUEST, request.method)
            if !request.body.isEmpty { e.setBody(request.body) }
        }
        e.setHeaders(request.headers)
        _ = llmq_easy_setopt_write(e.handle, transferWriteCallback)
        e.set(CURLOPT_WRITEDATA, pointer: me)
        _ = llmq_easy_setopt_header(e.handle, transferHeaderCallback)
        e.set(CURLOPT_HEADERDATA, pointer: me)
        e.set(CURLOPT_PRIVATE, pointer: me)
        lastDataAt = Clock.nowNanos()
    }

    func receive(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        lastDataAt = Clock.nowNanos()
        if result.status == 0 { result.status = easy?.responseCode ?? 0 }
        if result.isHTTPSuccess {
            guard decoder.consume(bytes) else {
                result.aborted = .decoder
                return false
            }
            if output?.exceeded == true {
                result.aborted = .outputLimit
                return false
            }
            return true
        }
        let room = 65536 - result.errorBody.count
        if room > 0 { result.errorBody.append(contentsOf: UnsafeBufferPointer(rebasing: bytes.prefix(room))) }
        return true
    }

    func header(_ bytes: UnsafeBufferPointer<UInt8>) {
        lastDataAt = Clock.nowNanos()
        let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if line.hasPrefix("HTTP/") {
            result.headers.removeAll()
            result.status = 0
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        result.headers[name] = value
    }
}

/// Identifies a transfer so it can be aborted from any thread.
public final class TransferToken: Sendable {
    /// Set by the first abort, so one that arrives before the engine took the transfer is not lost.
    let abortReason = Mutex<HTTPResult.Abort?>(nil)

    public init() {}
}

private let transferWriteCallback: llmq_data_cb = { ptr, size, nmemb, userdata in
    guard let ptr, let userdata else { return 0 }
    let n = size * nmemb
    let t = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    let buf = UnsafeRawBufferPointer(start: ptr, count: n).bindMemory(to: UInt8.self)
    return t.receive(buf) ? n : 0
}

private let transferHeaderCallback: llmq_data_cb = { ptr, size, nmemb, userdata in
    guard let ptr, let userdata else { return 0 }
    let n = size * nmemb
    let t = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    t.header(UnsafeRawBufferPointer(start: ptr, count: n).bindMemory(to: UInt8.self))
    return n
}
