import Hummingbird
import Logging
import ServiceLifecycle

/// Plays a list of steps as a response body, one flushed write per step, and keeps the
/// `active` and `aborted` counts: a body whose client goes away before its end is aborted.
struct SimStreamPlayer: Sendable {
    /// Thrown to make Hummingbird drop the connection mid-body, as a `cut` step asks.
    private struct Cut: Error {}

    let state: SimState
    let logger: Logger

    /// A response whose body is played step by step.
    func response(
        for request: Request,
        contentType: String,
        steps: [SimStep],
        contentLength: Int? = nil
    ) -> Response {
        if case .gzipBomb? = steps.first { return Self.gzipBomb(contentType: contentType) }
        let headers: HTTPFields = [
            .contentType: contentType,
            .cacheControl: "no-cache",
            // Watching for the client to leave consumes the connection's input, so it cannot
            // carry another request; say so rather than let the client find out.
            .connection: "close",
        ]
        return Response(status: .ok, headers: headers, body: self.body(for: request, steps: steps, contentLength: contentLength))
    }

    /// A JSON answer, broken the way a mid-body fault asks.
    func jsonResponse(_ json: SimJSON, for request: Request, fault: SimFault?, knobs: SimKnobs) -> Response {
        var buffer = json.buffer
        if let keys = SimNumbers.keys(for: fault) {
            buffer = ByteBuffer(string: SimNumbers.replace(json.encoded, keys: keys, with: knobs.number))
        }
        switch fault {
        case .gzipBomb:
            return Self.gzipBomb(contentType: "application/json")
        case .truncate:
            return Self.json(buffer.getSlice(at: buffer.readerIndex, length: buffer.readableBytes / 2) ?? ByteBuffer())
        case .stall:
            return self.response(
                for: request, contentType: "application/json", steps: [.hang(seconds: Self.hangSeconds)],
                contentLength: buffer.readableBytes)
        case .disconnect:
            let half = buffer.getSlice(at: buffer.readerIndex, length: buffer.readableBytes / 2) ?? ByteBuffer()
            return self.response(
                for: request, contentType: "application/json", steps: [.write(half), .cut],
                contentLength: buffer.readableBytes)
        case .malformed:
            return Self.json(ByteBuffer(string: "{not json"))
        default:
            return Self.json(buffer)
        }
    }

    static let hangSeconds = 60

    /// A 200 whose body is a gzip bomb, announced as `Content-Encoding: gzip`.
    static func gzipBomb(contentType: String) -> Response {
        let headers: HTTPFields = [.contentType: contentType, .contentEncoding: "gzip"]
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: SimGzipBomb.body))
    }

    static func json(_ buffer: ByteBuffer) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: buffer))
    }

    private func body(for request: Request, steps: [SimStep], contentLength: Int?) -> ResponseBody {
        ResponseBody(contentLength: contentLength) { writer in
            await self.state.streamOpened()
            do {
                // The request body was read already; what is left of it tells when the client
                // goes away, and then the playback is cancelled even while nothing is written.
                try await request.body.consumeWithCancellationOnInboundClose { _ in
                    try await Self.play(steps, into: &writer)
                }
                try await writer.finish(nil)
                await self.state.streamClosed(aborted: false)
            } catch let cut as Cut {
                await self.state.streamClosed(aborted: false)
                throw cut
            } catch {
                self.logger.debug("sim client went away mid-body", metadata: ["error": "\(error)"])
                await self.state.streamClosed(aborted: true)
                throw error
            }
        }
    }

    private static func play(_ steps: [SimStep], into writer: inout any ResponseBodyWriter) async throws {
        for step in steps {
            switch step {
            case .write(let buffer):
                try await writer.write(buffer)
            case .pause(let milliseconds):
                try await Self.wait(.milliseconds(milliseconds))
            case .hang(let seconds):
                try await Self.wait(.seconds(seconds))
                throw Cut()
            case .cut:
                throw Cut()
            case .end:
                return
            case .flood(let buffer, let times):
                for _ in 0..<times {
                    try Task.checkCancellation()
                    try await writer.write(buffer)
                    // A flood to a fast reader never waits on its own; other streams get their turn.
                    await Task.yield()
                }
            case .gzipBomb:
                return  // answered before any body was played
            }
        }
    }

    /// Waits, unless the server starts shutting down: then the body is cut, so a slow or
    /// stalled stream never holds up the drain.
    private static func wait(_ duration: Duration) async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await Task.sleep(for: duration)
            }
        } catch is CancellationError where Task.isShuttingDownGracefully {
            throw Cut()
        }
    }
}
