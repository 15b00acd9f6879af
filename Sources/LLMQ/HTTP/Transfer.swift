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
    var admitted: (@Sendable (UInt64) -> Void)?
    var easy: CurlEasy?
    var result = HTTPResult()
    var lastDataAt: UInt64 = 0
    private var sawBody = false
    private var loop: EngineLoop?
    /// The cleartext upstream this transfer is counted under while libcurl has it.
    var origin: UpstreamOrigin?
    /// Whether this transfer is on its engine round's list of output to flush.
    var outputMarked = false

    init(request: HTTPRequest, decoder: StreamDecoder, output: PendingOutput?, token: TransferToken) {
        self.request = request
        self.decoder = decoder
        self.output = output
        self.token = token
    }

    /// libcurl's receive buffer, allocated per transfer when it connects. Its default of 16 KiB was a
    /// third of a stream's memory, for frames of a few hundred bytes.
    static let receiveBufferBytes = 4096

    func configure(_ e: CurlEasy, loop: EngineLoop? = nil) {
        easy = e
        self.loop = loop
        let me = Unmanaged.passUnretained(self).toOpaque()
        e.set(CURLOPT_URL, request.url)
        e.set(CURLOPT_NOSIGNAL, 1)
        e.set(CURLOPT_TCP_NODELAY, 1)
        e.set(CURLOPT_BUFFERSIZE, Self.receiveBufferBytes)
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

    /// Puts this transfer on the round's flush list when it has lines to send.
    func markOutput() {
        guard !outputMarked, let loop, output?.hasPending == true else { return }
        outputMarked = true
        loop.dirty.append(self)
    }

    /// Records how libcurl ended the transfer and lets the decoder finish a 2xx body.
    func complete(code: CURLcode) {
        result.curlCode = Int(code.rawValue)
        if code != CURLE_OK {
            result.curlMessage = String(cString: curl_easy_strerror(code))
            if result.aborted == nil { result.transportFailure = Self.failure(code, osErrno: easy?.osErrno ?? 0) }
        } else if result.status == 0 {
            result.status = easy?.responseCode ?? 0
        }
        if code == CURLE_OK && result.isHTTPSuccess { decoder.finish() }
    }

    /// libcurl's code in transport terms. A socket or a resolver thread that could not be
    /// created for lack of descriptors or memory is this process's trouble, not the upstream's.
    static func failure(_ code: CURLcode, osErrno: Int) -> TransportFailure {
        let local = localErrnos.contains(Int32(truncatingIfNeeded: osErrno))
        switch code {
        case CURLE_OPERATION_TIMEDOUT: return .timedOut
        case CURLE_OUT_OF_MEMORY: return .localResource
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_CONNECT:
            // libcurl 7.88 reports a socket() that failed with EMFILE as a plain "couldn't
            // connect", errno 0; a socket of our own tells whether descriptors ran out.
            return local || (osErrno == 0 && socketsExhausted()) ? .localResource : .unreachable
        default: return local ? .localResource : .other
        }
    }

    static let localErrnos: Set<Int32> = [EMFILE, ENFILE, ENOMEM, ENOBUFS]

    /// Whether this process cannot open a socket right now.
    static func socketsExhausted() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if fd >= 0 {
            close(fd)
            return false
        }
        return localErrnos.contains(errno)
    }

    func receive(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        lastDataAt = Clock.nowNanos()
        if result.status == 0 { result.status = easy?.responseCode ?? 0 }
        if result.isHTTPSuccess {
            if !sawBody {
                sawBody = true
                // No Accept-Encoding goes out, so a compressed answer is one nobody asked for
                // (and possibly a bomb): refused rather than inflated.
                if let enc = result.headers["content-encoding"]?.lowercased(), !["", "identity", "none"].contains(enc) {
                    result.aborted = .compressedBody
                    return false
                }
            }
            guard decoder.consume(bytes) else {
                result.aborted = .decoder
                return false
            }
            if output?.exceeded == true {
                result.aborted = .outputLimit
                return false
            }
            markOutput()
            return true
        }
        let room = HTTPResult.maxErrorBodyBytes - result.errorBody.count
        if room > 0 { result.errorBody.append(contentsOf: UnsafeBufferPointer(rebasing: bytes.prefix(room))) }
        return true
    }

    /// Returns false (aborting the transfer) once the headers outgrow their cap.
    func header(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        lastDataAt = Clock.nowNanos()
        result.headerBytes += bytes.count
        if result.headerBytes > HTTPResult.maxHeaderBytes {
            result.aborted = .headerLimit
            return false
        }
        // Parsed as bytes: one String per name and value, no Foundation on the per-request path.
        var start = 0, end = bytes.count
        while start < end, Self.isSpace(bytes[start]) { start += 1 }
        while end > start, Self.isSpace(bytes[end - 1]) { end -= 1 }
        let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
        if line.starts(with: Self.statusPrefix) {
            result.headers.removeAll()
            result.status = 0
            return true
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return true }
        var valueStart = colon + 1
        while valueStart < line.count, Self.isSpace(line[valueStart]) { valueStart += 1 }
        let name = String(unsafeUninitializedCapacity: colon) { out in
            for i in 0..<colon { out[i] = line[i] >= 65 && line[i] <= 90 ? line[i] + 32 : line[i] }
            return colon
        }
        result.headers[name] = String(decoding: UnsafeBufferPointer(rebasing: line[valueStart...]), as: UTF8.self)
        return true
    }

    private static let statusPrefix: [UInt8] = Array("HTTP/".utf8)

    private static func isSpace(_ b: UInt8) -> Bool { b == 32 || b == 9 || b == 10 || b == 13 }
}

/// Identifies a transfer so it can be aborted from any thread.
public final class TransferToken: Sendable {
    /// Set by the first abort, so one that arrives before the engine took the transfer is not lost.
    let abortReason = Mutex<HTTPResult.Abort?>(nil)
    /// The engine lane of its latest transfer, where an abort goes.
    let lane = Atomic<Int>(0)

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
    return t.header(UnsafeRawBufferPointer(start: ptr, count: n).bindMemory(to: UInt8.self)) ? n : 0
}
