import CCurl
import CCurlShim
import Foundation

/// Owns one libcurl easy handle and the header list it was given.
///
/// Thread rules: used only by the HTTP engine's thread.
final class CurlEasy {
    let handle: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?

    static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    init() {
        Self.globalInit
        guard let h = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        handle = h
    }

    deinit {
        curl_easy_cleanup(handle)
        if let headerList { curl_slist_free_all(headerList) }
    }

    func reset() {
        curl_easy_reset(handle)
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
    }

    func set(_ o: CURLoption, _ v: Int) { _ = llmq_easy_setopt_long(handle, o, v) }
    func set(_ o: CURLoption, _ s: String) { _ = s.withCString { llmq_easy_setopt_ptr(handle, o, $0) } }
    func set(_ o: CURLoption, pointer: UnsafeRawPointer?) { _ = llmq_easy_setopt_ptr(handle, o, pointer) }

    func setHeaders(_ lines: [String]) {
        for l in lines { headerList = curl_slist_append(headerList, l) }
        set(CURLOPT_HTTPHEADER, pointer: headerList.map { UnsafeRawPointer($0) })
    }

    func setBody(_ body: [UInt8]) {
        _ = llmq_easy_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
        body.withUnsafeBytes { _ = llmq_easy_setopt_ptr(handle, CURLOPT_COPYPOSTFIELDS, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)) }
    }

    /// The errno of the last failed system call of the transfer (socket, connect …).
    var osErrno: Int {
        var code = 0
        _ = llmq_easy_getinfo_long(handle, CURLINFO_OS_ERRNO, &code)
        return code
    }

    var responseCode: Int {
        var code = 0
        _ = llmq_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
        return code
    }
}

/// Owns one libcurl multi handle.
///
/// Thread rules: only the HTTP engine's thread uses it.
final class CurlMulti: @unchecked Sendable {  // created by the engine, used only on its thread
    let handle: UnsafeMutableRawPointer
    private var loop: Unmanaged<EngineLoop>?

    /// `connections`: how many connections, busy or idle, libcurl keeps open. Beyond it a finished
    /// transfer's connection closes the oldest idle one (libcurl's default, four per transfer in progress,
    /// closed most of a burst's connections as it drained, with a walk of all of them for each).
    init(connections: Int) {
        CurlEasy.globalInit
        guard let m = curl_multi_init() else { fatalError("curl_multi_init failed: out of memory") }
        handle = m
        _ = llmq_multi_setopt_long(m, CURLMOPT_MAXCONNECTS, connections)
    }

    deinit {
        curl_multi_cleanup(handle)
        loop?.release()
    }

    /// Lets libcurl tell `loop` which sockets to watch and when its timeout is due.
    func drive(with loop: EngineLoop) {
        let ref = Unmanaged.passRetained(loop)
        self.loop = ref
        _ = llmq_multi_setopt_socket(handle, engineSocketCallback)
        _ = llmq_multi_setopt_ptr(handle, CURLMOPT_SOCKETDATA, ref.toOpaque())
        _ = llmq_multi_setopt_timer(handle, engineTimerCallback)
        _ = llmq_multi_setopt_ptr(handle, CURLMOPT_TIMERDATA, ref.toOpaque())
    }
}
