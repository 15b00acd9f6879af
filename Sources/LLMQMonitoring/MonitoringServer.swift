import Foundation
import Hummingbird
import LLMQ
import Logging
import ServiceLifecycle

/// The operations endpoints of one process, for Prometheus, load balancers and
/// Kubernetes probes:
///
/// - `GET /metrics`: Prometheus text exposition (whatever `render` returns);
/// - `GET /healthz`: 200 while the process answers at all (liveness);
/// - `GET /readyz`: 200 while Redis answers and no drain has started, else 503
///   with the reason (readiness).
///
/// Put it first in the `ServiceGroup`: shutdown runs in reverse order, so it
/// keeps answering (503 on /readyz, fresh /metrics) through the whole drain.
public struct MonitoringServer: Service {
    let host: String
    let port: Int
    let readiness: Readiness
    let render: @Sendable () -> [UInt8]
    let logger: Logger
    let onReady: @Sendable (Int) async -> Void

    public init(host: String, port: Int, readiness: Readiness, logger: Logger,
                onReady: @escaping @Sendable (Int) async -> Void = { _ in }, render: @escaping @Sendable () -> [UInt8]) {
        self.host = host
        self.port = port
        self.readiness = readiness
        self.render = render
        self.logger = logger
        self.onReady = onReady
    }

    public func run() async throws {
        let router = Router()
        router.get("metrics") { _, _ -> Response in
            let bytes = render()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.get("healthz") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        router.get("readyz") { _, _ -> Response in
            if let why = readiness.reason {
                return Response(status: .serviceUnavailable, headers: [.contentType: "text/plain"],
                                body: .init(byteBuffer: ByteBuffer(string: "not ready: \(why)\n")))
            }
            return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)  // no line per scrape
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "llmq"),
            onServerRunning: { [logger, onReady] channel in
                let bound = channel.localAddress?.port ?? port
                // SwiftNIO opens the listening socket without close-on-exec; a crash
                // backtracer started by the runtime would inherit it and hold the port.
                ProcessSetup.markDescriptorsCloseOnExec()
                logger.info("serving /metrics, /healthz and /readyz", metadata: ["address": "\(host):\(bound)"])
                await onReady(bound)
            },
            logger: quiet)
        do {
            try await app.run()
        } catch {
            // The farm keeps working without its endpoints rather than stopping
            // its workers; `checkPort` catches the usual cause before start-up.
            logger.error("the /metrics, /healthz and /readyz server stopped", metadata: ["address": "\(host):\(port)", "error": "\(error)"])
            try? await gracefulShutdown()
        }
    }

    /// Fails with a message naming the key when `host:port` cannot be bound (in use, or not an address here).
    public static func checkPort(host: String, port: Int) throws(LLMQError) {
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
            throw .configuration("http_host \(host) is not an address of this machine; use 0.0.0.0, 127.0.0.1 or one of its addresses")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), first.pointee.ai_protocol)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 {
            let why = String(cString: strerror(errno))
            throw .configuration("cannot listen on \(host):\(port) for /metrics, /healthz and /readyz: \(why); set http_port (or --http-port) to a free port, or 0 to turn them off")
        }
    }
}
