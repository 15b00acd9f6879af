/// One request to an upstream, fully built before it reaches the engine.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    /// Header lines, `Name: value`.
    public var headers: [String]
    public var body: [UInt8]
    /// Total time allowed, seconds.
    public var timeout: Double?
    /// Longest silence allowed between received bytes, seconds.
    public var idleTimeout: Double?
    public var connectTimeout: Double

    public init(method: String = "POST", url: String, headers: [String] = [], body: [UInt8] = [],
                timeout: Double? = nil, idleTimeout: Double? = nil, connectTimeout: Double = 10) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.idleTimeout = idleTimeout
        self.connectTimeout = connectTimeout
    }
}

/// Why a transfer failed below HTTP, in words that do not depend on libcurl.
///
/// `localResource` means this process ran out of something (file descriptors,
/// memory) before the request left it: the provider is not at fault, so it must
/// not count towards the provider's failures or cooldown; the job may be retried,
/// ideally by another worker.
public enum TransportFailure: Sendable, Equatable {
    /// `timeout_s` ran out (the request's total time).
    case timedOut
    /// The host could not be resolved or refused the connection.
    case unreachable
    /// Out of descriptors or memory here (EMFILE, ENFILE, ENOMEM, ENOBUFS).
    case localResource
    /// Anything else: TLS, a broken connection, a protocol error.
    case other
}

/// What came back, once the transfer ended one way or another.
public struct HTTPResult: Sendable {
    public enum Abort: Sendable, Equatable {
        case cancelled
        case idleTimeout
        case drain
        case decoder
        case outputLimit
        /// The response's headers outgrew `HTTPResult.maxHeaderBytes`.
        case headerLimit
        /// A 2xx body came compressed (`Content-Encoding`), which llmq never asks for.
        case compressedBody
    }

    /// Most header bytes accepted from one response; more aborts the transfer.
    public static let maxHeaderBytes = 256 << 10
    /// Most bytes of a non-2xx body kept for the error message.
    public static let maxErrorBodyBytes = 64 << 10

    public var status: Int = 0
    /// Set when the transfer failed below HTTP; nil when it completed or was aborted by llmq.
    public var transportFailure: TransportFailure?
    /// libcurl's result code; 0 when the transfer completed.
    /// Deprecated outside HTTP/: read `transportFailure` instead (kept while JobRunner still reads it).
    public var curlCode: Int = 0
    /// What the transport said when it failed (libcurl's words).
    public var curlMessage: String = ""
    /// Bytes of response headers seen so far (all responses, 1xx included).
    var headerBytes = 0
    /// Response headers of the final response, names lower-cased.
    public var headers: [String: String] = [:]
    /// The body of a non-2xx response (first 64 KiB).
    public var errorBody: [UInt8] = []
    public var aborted: Abort?

    public init() {}

    public var isHTTPSuccess: Bool { status >= 200 && status < 300 }
    public var completed: Bool { curlCode == 0 && aborted == nil }
}

/// Consumes a 2xx response body on the engine thread, as it arrives.
public protocol StreamDecoder: AnyObject {
    /// Returns false to abort the transfer (malformed stream).
    func consume(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool
    /// The body ended normally.
    func finish()
}

/// Takes the output written during transfers, in batches, on the engine thread.
public protocol OutputSink: AnyObject, Sendable {
    /// `body` appends encoded commands and returns how many it appended.
    func submit(_ body: (inout [UInt8]) -> Int)
}

/// Output of one transfer that the engine drains into the sink after each round.
public protocol PendingOutput: AnyObject {
    var hasPending: Bool { get }
    /// The request's output outgrew its limit; the transfer should stop.
    var exceeded: Bool { get }
    /// Appends encoded commands for what is pending; returns how many.
    func drain(into buffer: inout [UInt8]) -> Int
}
