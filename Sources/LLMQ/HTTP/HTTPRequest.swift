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

/// What came back, once the transfer ended one way or another.
public struct HTTPResult: Sendable {
    public enum Abort: Sendable, Equatable {
        case cancelled
        case idleTimeout
        case drain
        case decoder
        case outputLimit
    }

    public var status: Int = 0
    /// libcurl's result code; 0 when the transfer completed.
    public var curlCode: Int = 0
    public var curlMessage: String = ""
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
