import Foundation
import LLMQ
import LLMQTestSupport
import Synchronization
import Testing

/// The HTTP engine keeps and reuses its upstream connections when it skips libcurl's search for
/// an idle one (which it does only when every connection it holds is busy).
@Suite struct ConnectionReuseTests {
    final class Discard: StreamDecoder {
        func consume(_ b: UnsafeBufferPointer<UInt8>) -> Bool { true }
        func finish() {}
    }

    /// Sends `count` requests at once and answers them together once all have arrived,
    /// so that `count` connections are busy at the same time.
    static func wave(_ engine: HTTPEngine, _ server: HeldAnswerServer, count: Int, closing: Bool = false) async throws {
        let before = server.requests
        try await withThrowingTaskGroup(of: HTTPResult.self) { group in
            for _ in 0..<count {
                group.addTask {
                    await engine.perform(HTTPRequest(url: "http://127.0.0.1:\(server.port)/v1/chat/completions", body: Array("{}".utf8), timeout: 30),
                                         decoder: Discard(), output: nil)
                }
            }
            try await Self.until("\(count) requests to arrive, \(server.requests - before) did") { server.requests - before == count }
            server.answerHeld(closing: closing)
            for try await r in group { #expect(r.completed && r.status == 200, "\(r)") }
        }
    }

    /// Polls without holding a thread of the task pool, which runs the requests being waited for.
    static func until(_ what: String, timeout: Double = 30, _ condition: () -> Bool) async throws {
        let end = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < end else { throw TestFailure("timed out after \(timeout) s waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    @Test(arguments: [1, 2])
    func connectionsAreReusedAboveTheWalkThresholdAndAfterTheUpstreamClosesThem(threads: Int) async throws {
        let server = try HeldAnswerServer()
        defer { server.stop() }
        let engine = HTTPEngine(sink: nil, threads: threads)
        engine.start()
        let n = 150 * threads  // above the 64 transfers per thread under which libcurl's search always runs
        try await Self.wave(engine, server, count: n)
        #expect(server.accepted == n, "one connection per concurrent request: \(server.accepted)")
        try await Self.wave(engine, server, count: n)
        #expect(server.accepted == n, "every request of the second wave reused an idle connection: \(server.accepted) accepted")
        try await Self.wave(engine, server, count: n, closing: true)
        #expect(server.accepted == n)
        try await server.until(open: 0)
        try await Self.wave(engine, server, count: n)
        #expect(server.accepted == 2 * n, "the closed connections were replaced once: \(server.accepted)")
        try await Self.wave(engine, server, count: n)
        #expect(server.accepted == 2 * n, "and the new ones are reused: \(server.accepted) accepted")
        await engine.shutdown()
    }

    @Test func anAbortReachesTheThreadThatRunsTheTransfer() async throws {
        let server = try HeldAnswerServer()
        defer { server.stop() }
        let engine = HTTPEngine(sink: nil, threads: 3)
        engine.start()
        let tokens = (0..<6).map { _ in TransferToken() }
        try await withThrowingTaskGroup(of: HTTPResult.self) { group in
            for token in tokens {
                group.addTask {
                    await engine.perform(HTTPRequest(url: "http://127.0.0.1:\(server.port)/v1/chat/completions", body: Array("{}".utf8), timeout: 30),
                                         decoder: Discard(), output: nil, token: token)
                }
            }
            try await Self.until("6 requests to arrive, \(server.requests) did") { server.requests == 6 }
            for token in tokens { engine.abort(token, reason: .cancelled) }
            for try await r in group { #expect(r.aborted == .cancelled, "\(r)") }
        }
        server.answerHeld(closing: false)
        await engine.shutdown()
    }
}

/// A loopback HTTP/1.1 server that holds every request until the test answers them together, and
/// counts the connections it accepted. One thread polls all its sockets.
final class HeldAnswerServer: Sendable {
    let port: Int
    private let listener: Int32
    private struct State {
        var accepted = 0
        var requests = 0
        var open = 0
        var answer: Bool?  // set by the test: answer the held requests, closing their connections or not
        var stopped = false
    }
    private let state = Mutex(State())

    var accepted: Int { state.withLock { $0.accepted } }
    var requests: Int { state.withLock { $0.requests } }

    init() throws {
        (listener, port) = try LoopbackListener.open(backlog: 1024)
        Thread { [self] in serve() }.start()
    }

    func answerHeld(closing: Bool) { state.withLock { $0.answer = closing } }
    func stop() { state.withLock { $0.stopped = true } }

    /// Waits until the server holds `open` connections (the client closes its side after the server closed its own).
    func until(open: Int, timeout: Double = 30) async throws {
        try await ConnectionReuseTests.until("\(open) open connections, \(state.withLock { $0.open }) now", timeout: timeout) {
            state.withLock { $0.open } == open
        }
    }

    private struct Connection {
        var fd: Int32
        var buffer: [UInt8] = []
        var held = false
    }

    private func serve() {
        var conns: [Connection] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        let body = "data: [DONE]\n\n"
        while true {
            let (stopped, answer) = state.withLock { s -> (Bool, Bool?) in
                defer { s.answer = nil }
                return (s.stopped, s.answer)
            }
            if stopped { break }
            if let closing = answer {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: \(body.utf8.count)\r\n"
                let bytes = Array((head + (closing ? "Connection: close\r\n" : "") + "\r\n" + body).utf8)
                for i in conns.indices where conns[i].held {
                    _ = bytes.withUnsafeBytes { write(conns[i].fd, $0.baseAddress, $0.count) }
                    conns[i].held = false
                    if closing { shutdown(conns[i].fd, Int32(SHUT_WR)) }
                }
            }
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)] + conns.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            guard poll(&fds, nfds_t(fds.count), 5) >= 0 else { continue }
            if fds[0].revents != 0 {
                let c = accept(listener, nil, nil)
                if c >= 0 {
                    conns.append(Connection(fd: c))
                    state.withLock { $0.accepted += 1; $0.open += 1 }
                }
            }
            var closed: Set<Int32> = []
            for (i, p) in fds.dropFirst().enumerated() where p.revents != 0 {
                let n = read(conns[i].fd, &chunk, chunk.count)
                if n <= 0 {
                    closed.insert(conns[i].fd)
                    continue
                }
                conns[i].buffer += chunk[0..<n]
                if Self.requestComplete(conns[i].buffer) {
                    conns[i].buffer.removeAll()
                    conns[i].held = true
                    state.withLock { $0.requests += 1 }
                }
            }
            if !closed.isEmpty {
                for fd in closed { close(fd) }
                conns.removeAll { closed.contains($0.fd) }
                state.withLock { $0.open -= closed.count }
            }
        }
        for c in conns { close(c.fd) }
        close(listener)
    }

    /// Whether `b` holds a whole request: headers, then as many body bytes as Content-Length says.
    static func requestComplete(_ b: [UInt8]) -> Bool {
        let text = String(decoding: b, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { return false }
        let head = text[..<end.lowerBound].lowercased()
        var length = 0
        if let r = head.range(of: "content-length:") {
            length = Int(head[r.upperBound...].prefix { $0 != "\r" }.trimmingCharacters(in: .whitespaces)) ?? 0
        }
        return text.utf8.distance(from: end.upperBound.samePosition(in: text.utf8)!, to: text.utf8.endIndex) >= length
    }
}
