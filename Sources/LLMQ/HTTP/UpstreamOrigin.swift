import CCurl
import CCurlShim

/// One cleartext upstream (`http://host:port`): the sockets libcurl holds open to it, counted by
/// libcurl's own open and close callbacks, and the engine's transfers to it.
///
/// libcurl 7.88 looks for a connection to reuse by walking every connection it holds to the host,
/// busy or idle, so a burst of n new transfers to one upstream costs O(n²): the walk was 40% of a
/// worker's CPU while 10,000 streams started. When there are no more sockets than transfers, every
/// connection is busy and the walk cannot succeed, so the transfer asks for a new connection at once.
///
/// Thread rules: engine thread only; libcurl's socket callbacks run there too (and in
/// `curl_multi_cleanup`, which runs before the engine's loop state, which owns these, is released).
final class UpstreamOrigin {
    let sockets: UnsafeMutablePointer<llmq_socket_count>
    /// Transfers to this upstream that are added to the multi handle.
    var transfers = 0

    init() {
        sockets = .allocate(capacity: 1)
        sockets.initialize(to: llmq_socket_count(open: 0))
    }

    deinit { sockets.deallocate() }

    /// Whether every connection libcurl holds here is busy. Under `fewTransfers` the walk is cheap and
    /// always taken: a transfer still resolving its host holds no socket yet, so the count can understate
    /// the idle connections, and a needless new connection costs more than a short walk.
    var allBusy: Bool { transfers >= Self.fewTransfers && sockets.pointee.open <= transfers }

    static let fewTransfers = 64

    /// `http://host:port` of a cleartext URL. Nil for HTTPS: an HTTP/2 connection takes more streams while busy.
    static func key(of url: String) -> String? {
        let u = url.utf8
        guard u.starts(with: "http://".utf8) else { return nil }
        let hostStart = u.index(u.startIndex, offsetBy: 7)
        let end = u[hostStart...].firstIndex(of: UInt8(ascii: "/")) ?? u.endIndex
        return String(url[..<end])
    }
}

extension EngineLoop {
    /// Counts `transfer`'s sockets under its upstream, and skips libcurl's search for an idle
    /// connection when there is none.
    func admit(_ transfer: Transfer, on easy: CurlEasy) {
        guard let key = UpstreamOrigin.key(of: transfer.request.url) else { return }
        let origin: UpstreamOrigin
        if let known = origins[key] {
            origin = known
        } else {
            origin = UpstreamOrigin()
            origins[key] = origin
        }
        if origin.allBusy { easy.set(CURLOPT_FRESH_CONNECT, 1) }
        llmq_easy_count_sockets(easy.handle, origin.sockets)
        origin.transfers += 1
        transfer.origin = origin
    }

    /// Uncounts `transfer`, which libcurl no longer has.
    func leave(_ transfer: Transfer) {
        transfer.origin?.transfers -= 1
        transfer.origin = nil
    }
}
