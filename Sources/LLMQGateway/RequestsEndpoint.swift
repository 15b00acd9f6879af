import Foundation
import Hummingbird
import LLMQ

/// Requests by id, for producers that enqueue and watch later, and for browsers:
/// `GET /v1/requests/{id}/events` (SSE, replayed from the log then live, resumable with
/// Last-Event-ID), `GET /v1/requests/{id}` (the result), `DELETE /v1/requests/{id}` (cancel),
/// and `POST /v1/jobs` (a protocol job as it is).
struct RequestsEndpoint: Sendable {
    let gateway: Gateway

    /// Where a line stands in a request's history: attempts that were restarted after output
    /// (`retry`) count as epochs, and seq counts within one. SSE ids are `EPOCH-SEQ`.
    struct Position: Comparable {
        var epoch: Int
        var seq: Int
        static func < (a: Position, b: Position) -> Bool { (a.epoch, a.seq) < (b.epoch, b.seq) }
        init(epoch: Int, seq: Int) { self.epoch = epoch; self.seq = seq }
        init?(_ text: String?) {
            guard let parts = text?.split(separator: "-"), parts.count == 2, let e = Int(parts[0]), let s = Int(parts[1]) else { return nil }
            epoch = e
            seq = s
        }
        var text: String { "\(epoch)-\(seq)" }
    }

    func events(_ request: Request, context: some RequestContext) async throws -> Response {
        do {
            _ = try gateway.authenticate(request.headers[.authorization] ?? request.uri.queryParameters.get("api_key").map { "Bearer \($0)" })
            guard let id = context.parameters.get("id"), Job.isValidID(id) else { throw GatewayError.badRequest("the request id must be 1-128 of A-Z a-z 0-9 . _ : -") }
            let resume = Position(request.headers.first(where: { $0.name.canonicalName == "last-event-id" })?.value ?? request.uri.queryParameters.get("last_event_id"))
            let sub: SubscriptionHub.Subscription
            do { sub = try await gateway.hub.subscribe(gateway.keys.tokens(id)) } catch {
                throw GatewayError.unavailable("cannot subscribe: \(error)", retryAfter: gateway.config.gateway.retryAfterS)
            }
            // Subscribed before reading the log, so no line falls between the two.
            let logKey = gateway.keys.log(id)
            let replay: [[UInt8]]
            do {
                replay = try await gateway.redis { c throws(LLMQError) in try Self.readLog(c, key: logKey) }
            } catch {
                gateway.hub.unsubscribe(sub)
                throw error
            }
            gateway.metrics.answered(endpoint: "events", status: 200)
            let gateway = self.gateway
            let timeout = gateway.config.gateway.requestTimeoutS
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: ResponseBody { writer in
                let c = sub.continuation
                let timer = Task {
                    try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                    if !Task.isCancelled { c.finish() }
                }
                defer { timer.cancel(); gateway.hub.unsubscribe(sub) }
                var payloads = sub.payloads.makeAsyncIterator()
                var epoch = 0
                var last = Position(epoch: 0, seq: -1)
                var ended = false
                try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
                func emit(_ line: ArraySlice<UInt8>, live: Bool) -> [UInt8]? {
                    guard let seq = Self.seq(line) else { return nil }
                    let pos = Position(epoch: epoch, seq: seq)
                    if live && pos <= last { return nil }  // seen in the log already
                    last = pos
                    if FarmEvent.parse(line: line).map({ if case .retry = $0 { true } else { false } }) == true { epoch += 1 }
                    if let e = FarmEvent.parse(line: line), e.isTerminal { ended = true }
                    if let resume, pos <= resume { return nil }
                    return Array("id: \(pos.text)\ndata: ".utf8) + line + Array("\n\n".utf8)
                }
                for line in replay {
                    if let out = emit(line[...], live: false) { try await writer.write(ByteBuffer(bytes: out)) }
                    if ended { break }
                }
                while !ended {
                    guard let payload = await payloads.next() else { break }
                    var start = 0
                    for i in 0...payload.count where i == payload.count || payload[i] == UInt8(ascii: "\n") {
                        if i > start, !ended, let out = emit(payload[start..<i], live: true) { try await writer.write(ByteBuffer(bytes: out)) }
                        start = i + 1
                    }
                }
                try await writer.finish(nil)
            })
        } catch let e as GatewayError {
            gateway.metrics.answered(endpoint: "events", status: Int(e.status.code))
            return CompletionEndpoint.error(e)
        }
    }

    /// Every line of a request's log, oldest first.
    static func readLog(_ c: RedisConnection, key: String) throws(LLMQError) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var from = "0-0"
        for _ in 0..<1000 {
            let r = try c.command(["XREAD", "COUNT", "1000", "STREAMS", key, from])
            if case .error(let e) = r { throw .redis("XREAD \(key): \(e)") }
            guard let entries = r.array?.first?.array?.last?.array, !entries.isEmpty else { break }
            for e in entries {
                guard let parts = e.array, parts.count == 2, let id = parts[0].string, let fields = parts[1].array else { continue }
                from = id
                var i = 0
                while i + 1 < fields.count {
                    if fields[i].string == "line", let line = fields[i + 1].bytes { out.append(line) }
                    i += 2
                }
            }
        }
        return out
    }

    static func seq(_ line: ArraySlice<UInt8>) -> Int? {
        line.withUnsafeBufferPointer { b in
            let s = JSONScanner(b)
            guard let root = s.validate(), let r = s.member(root, "seq") else { return nil }
            return s.int(r)
        }
    }

    func result(_ request: Request, context: some RequestContext) async throws -> Response {
        do {
            _ = try gateway.authenticate(request.headers[.authorization])
            guard let id = context.parameters.get("id"), Job.isValidID(id) else { throw GatewayError.badRequest("the request id must be 1-128 of A-Z a-z 0-9 . _ : -") }
            let resultKey = gateway.keys.result(id), logKey = gateway.keys.log(id)
            let (result, logged): ([UInt8]?, Int) = try await gateway.redis { c throws(LLMQError) in
                (try c.command(["GET", resultKey]).bytes, try c.command(["XLEN", logKey]).integer ?? 0)
            }
            if let result {
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: result)))
            }
            if logged > 0 {
                var o = Array(#"{"id":"#.utf8)
                JSONWriter.appendQuoted(id, to: &o)
                o += Array(#","status":"running"}"#.utf8)
                return Response(status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: o)))
            }
            throw GatewayError.notFound("no request \(id) has started or finished (it may still be queued, or its result expired)")
        } catch let e as GatewayError {
            return CompletionEndpoint.error(e)
        }
    }

    func cancel(_ request: Request, context: some RequestContext) async throws -> Response {
        do {
            _ = try gateway.authenticate(request.headers[.authorization])
            guard let id = context.parameters.get("id"), Job.isValidID(id) else { throw GatewayError.badRequest("the request id must be 1-128 of A-Z a-z 0-9 . _ : -") }
            try await gateway.cancel(id: id)
            var o = Array(#"{"id":"#.utf8)
            JSONWriter.appendQuoted(id, to: &o)
            o += Array(#","status":"cancelling"}"#.utf8)
            return Response(status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: o)))
        } catch let e as GatewayError {
            return CompletionEndpoint.error(e)
        }
    }

    /// A protocol job as it is; the mode comes from `mode`, else from messages / prompt / input.
    func submit(_ request: Request, context: some RequestContext) async throws -> Response {
        var request = request
        do {
            let caller = try gateway.authenticate(request.headers[.authorization])
            let body = try await request.collectBody(upTo: gateway.config.maxJobBytes)
            guard case .object(var job)? = try? JSONValue.parse(Array(buffer: body)) else { throw GatewayError.badRequest("the body must be one JSON object: a job") }
            let mode: Mode = job["mode"]?.stringValue.map { Mode($0) } ?? (job["messages"] != nil ? .chat : job["input"] != nil ? .embed : job["prompt"] != nil ? .complete : .chat)
            if job["id"] == nil { job["id"] = .string(Gateway.newID("job")) }
            if let tenant = caller.tenant { job["tenant"] = .string(tenant) }
            let id = job["id"]?.stringValue ?? ""
            let raw = JSONValue.object(job).jsonBytes
            try gateway.validate(raw, mode: mode)
            let targets = try gateway.targets(of: job["model"]?.stringValue ?? "")
            // Admission applies; the tenant's count covers requests the gateway follows, not jobs left to run.
            let lease = try await gateway.admit(id: id, mode: mode, targets: targets, caller: caller, push: raw)
            await gateway.release(lease)
            let out: JSONValue = ["id": .string(id), "mode": .string(mode.rawValue), "events": .string("/v1/requests/\(id)/events")]
            gateway.metrics.answered(endpoint: "jobs", status: 202)
            return Response(status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: out.jsonBytes)))
        } catch let e as GatewayError {
            gateway.metrics.answered(endpoint: "jobs", status: Int(e.status.code))
            return CompletionEndpoint.error(e)
        }
    }

    func models(_ request: Request) throws -> Response {
        do {
            _ = try gateway.authenticate(request.headers[.authorization])
        } catch {
            return CompletionEndpoint.error(error)
        }
        let data: [JSONValue] = gateway.config.routes.keys.sorted().map { r in
            ["id": .string(r), "object": "model", "created": 0, "owned_by": "llmq", "targets": .array((gateway.config.routes[r] ?? []).map { .string($0) })]
        }
        let out: JSONValue = ["object": "list", "data": .array(data)]
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: out.jsonBytes)))
    }
}
