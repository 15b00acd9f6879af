import Foundation
import Hummingbird
import LLMQ
import Logging

/// `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`: the request becomes a
/// job, the job's events become OpenAI's answer, streamed (SSE) or whole.
struct CompletionEndpoint: Sendable {
    let gateway: Gateway

    func respond(to request: Request, context: some RequestContext, kind: OpenAIRequest.Kind) async throws -> Response {
        let began = ContinuousClock.now
        let endpoint = kind == .chat ? "chat" : kind == .completion ? "completions" : "embeddings"
        var request = request
        let response: Response
        do {
            let caller = try gateway.authenticate(request.headers[.authorization])
            let body: ByteBuffer
            do { body = try await request.collectBody(upTo: gateway.config.maxJobBytes) } catch {
                throw GatewayError(.contentTooLarge, type: "invalid_request_error", code: "too_large",
                                   "the body is over max_job_bytes (\(gateway.config.maxJobBytes)); send less")
            }
            let id = Gateway.newID(kind == .chat ? "chatcmpl" : kind == .completion ? "cmpl" : "embd")
            var req = try OpenAIRequest.parse(Array(buffer: body), kind: kind, id: id)
            if let tenant = caller.tenant {
                req.job["tenant"] = .string(tenant)
                var md = req.job["metadata"]?.objectValue ?? [:]
                md["tenant"] = .string(tenant)
                req.job["metadata"] = .object(md)
            }
            let raw = JSONValue.object(req.job).jsonBytes
            try gateway.validate(raw, mode: req.mode)
            let targets = try gateway.targets(of: req.model)
            response = try await run(req, raw: raw, targets: targets, caller: caller, request: request, began: began, endpoint: endpoint)
        } catch let e as GatewayError {
            gateway.metrics.answered(endpoint: endpoint, status: Int(e.status.code))
            return Self.error(e)
        }
        return response
    }

    /// Subscribes, admits and pushes, and answers; always releases the lease and the subscription.
    private func run(_ req: OpenAIRequest, raw: [UInt8], targets: [String], caller: Gateway.Caller, request: Request, began: ContinuousClock.Instant,
                     endpoint: String) async throws(GatewayError) -> Response {
        let id = req.job["id"]?.stringValue ?? ""
        let sub: SubscriptionHub.Subscription
        let lease: Gateway.Lease
        if let admitted = try gateway.admitLocally(id: id, mode: req.mode, targets: targets, caller: caller) {
            // Nothing else to ask Redis: the hub pushes the job as soon as the subscription is confirmed.
            do {
                sub = try await gateway.hub.subscribe(gateway.keys.tokens(id), thenPush: .init(queue: gateway.config.family(forJob: id, mode: req.mode).queue, job: raw))
            } catch {
                throw .unavailable("cannot subscribe to the request's channel or push its job: \(error)", retryAfter: gateway.config.gateway.retryAfterS,
                                   code: "redis_unavailable")
            }
            lease = admitted
        } else {
            do {
                sub = try await gateway.hub.subscribe(gateway.keys.tokens(id))
            } catch {
                throw .unavailable("cannot subscribe to the request's channel: \(error)", retryAfter: gateway.config.gateway.retryAfterS, code: "redis_unavailable")
            }
            do throws(GatewayError) {
                lease = try await gateway.admit(id: id, mode: req.mode, targets: targets, caller: caller, push: raw)
            } catch {
                gateway.hub.unsubscribe(sub)
                throw error
            }
        }
        let feed = EventFeed(sub, timeout: (req.timeoutS.map { $0 + 30 } ?? 0) + gateway.config.gateway.requestTimeoutS)
        let gateway = self.gateway
        let timer = feed.timer
        @Sendable func finish() async {
            timer.cancel()
            gateway.hub.unsubscribe(sub)
            await gateway.release(lease)
            gateway.metrics.active(-1)
        }
        gateway.metrics.active(1)
        let encoder = OpenAIEncoder(kind: req.kind, id: lease.id, model: req.model)
        if !req.stream {
            let result = await collectWatchingClient(req, request: request, feed: feed, encoder: encoder)
            await finish()
            switch result {
            case .success(let bytes):
                gateway.metrics.firstByte(ContinuousClock.now - began)
                gateway.metrics.answered(endpoint: endpoint, status: 200)
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            case .failure(let e):
                throw e
            }
        }
        // Nothing is sent until the first event: a job that fails before any output is answered
        // with its own status, as if the gateway had called the provider itself.
        let first = await firstEvent(feed: feed)
        switch first {
        case .failure(let e):
            await finish()
            throw e
        case .success(let firstEvent):
            gateway.metrics.answered(endpoint: endpoint, status: 200)
            let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "close"]
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                var streamer = Streamer(encoder: encoder, includeUsage: req.includeUsage)
                do {
                    try await request.body.consumeWithCancellationOnInboundClose { _ in
                        var event: FarmEvent? = firstEvent
                        var firstWrite = true
                        while let e = event {
                            let out = streamer.encode(e)
                            if !out.isEmpty {
                                try await writer.write(ByteBuffer(bytes: out))
                                if firstWrite { gateway.metrics.firstByte(ContinuousClock.now - began); firstWrite = false }
                            }
                            if e.isTerminal || streamer.stopped { break }
                            event = await feed.next()
                        }
                        if event == nil && !streamer.stopped {
                            try await writer.write(ByteBuffer(bytes: streamer.encoder.errorChunk(self.endedEarly(feed))))
                            if feed.timedOut { try? await gateway.cancel(id: lease.id) }
                        }
                    }
                    try await writer.finish(nil)
                } catch {
                    gateway.metrics.clientLeft()
                    if !req.detach { try? await gateway.cancel(id: lease.id) }
                }
                await finish()
            })
        }
    }

    /// Waits for the first output or terminal event. The client is not watched here: the request
    /// body can be watched for its close only once, and the streamed body needs that. A client that
    /// left while its job waited is found at the first write, which cancels the job.
    private func firstEvent(feed f: EventFeed) async -> Result<FarmEvent, GatewayError> {
        while let e = await f.next() {
            switch e {
            case .start, .other, .retry: continue
            case .error(let code, let message, let after): return .failure(GatewayError.fromEvent(code: code, message: message, retryAfter: after))
            default: return .success(e)
            }
        }
        return .failure(endedEarly(f))
    }

    /// Collects a whole answer; the client leaving cancels the job.
    private func collectWatchingClient(_ req: OpenAIRequest, request: Request, feed f: EventFeed, encoder: OpenAIEncoder) async -> Result<[UInt8], GatewayError> {
        do {
            return try await request.body.consumeWithCancellationOnInboundClose { _ in
                var text: [UInt8] = []
                var tools: [OpenAIEncoder.ToolCall] = []
                var vectors: [(Int, [UInt8])] = []
                while let e = await f.next() {
                    switch e {
                    case .chunk(let t): text += t
                    case .toolCall(let index, let callID, let name, let args):
                        if let k = tools.firstIndex(where: { $0.index == index }) {
                            tools[k].escapedArguments += args
                        } else {
                            tools.append(.init(index: index, callID: callID ?? "", name: name ?? "", escapedArguments: args))
                        }
                    case .embedding(let index, let vector): vectors.append((index, vector))
                    case .retry:
                        text = []; tools = []; vectors = []
                    case .done(let reason, let p, let c):
                        if req.kind == .embedding {
                            return .success(Self.embeddings(vectors, model: req.model, prompt: p, base64: req.base64))
                        }
                        return .success(encoder.response(text: text, toolCalls: tools, finishReason: reason, prompt: p, completion: c))
                    case .error(let code, let message, let after):
                        return .failure(GatewayError.fromEvent(code: code, message: message, retryAfter: after))
                    case .start, .other: continue
                    }
                }
                return .failure(endedEarly(f))
            }
        } catch {
            return .failure(await clientLeft(req))
        }
    }

    /// Why a feed ended without a terminal event: the gateway's deadline, or its subscriber connection lost.
    private func endedEarly(_ f: EventFeed) -> GatewayError {
        if f.timedOut {
            return GatewayError(.gatewayTimeout, type: "timeout_error", code: "timeout", "no answer from the farm before the gateway's deadline (gateway.request_timeout_s)")
        }
        return GatewayError(.badGateway, type: "server_error", code: "redis_unavailable",
                            "the gateway lost its Redis subscription; the job may still finish: GET /v1/requests/\(f.subscription.channel.split(separator: "{").last?.split(separator: "}").first ?? "")")
    }

    private func clientLeft(_ req: OpenAIRequest) async -> GatewayError {
        gateway.metrics.clientLeft()
        if !req.detach, let id = req.job["id"]?.stringValue { try? await gateway.cancel(id: id) }
        return GatewayError(.init(code: 499, reasonPhrase: "Client Closed Request"), type: "cancelled", code: "cancelled", "the client went away")
    }

    static func error(_ e: GatewayError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let r = e.retryAfter { headers[.retryAfter] = String(r) }
        return Response(status: e.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: e.json)))
    }

    /// OpenAI's embeddings list; vectors as JSON arrays or base64 of little-endian float32.
    static func embeddings(_ vectors: [(Int, [UInt8])], model: String, prompt: Int?, base64: Bool) -> [UInt8] {
        var o = Array(#"{"object":"list","data":["#.utf8)
        for (n, v) in vectors.sorted(by: { $0.0 < $1.0 }).enumerated() {
            if n > 0 { o.append(UInt8(ascii: ",")) }
            o += Array(#"{"object":"embedding","index":"#.utf8)
            JSONWriter.appendInt(v.0, to: &o)
            o += Array(#","embedding":"#.utf8)
            if base64 {
                let floats = (try? JSONValue.parse(v.1))?.arrayValue?.compactMap(\.doubleValue) ?? []
                var data = Data(capacity: floats.count * 4)
                for f in floats { withUnsafeBytes(of: Float(f).bitPattern.littleEndian) { data.append(contentsOf: $0) } }
                JSONWriter.appendQuoted(data.base64EncodedString(), to: &o)
            } else {
                o += v.1
            }
            o += Array("}".utf8)
        }
        o += Array(#"],"model":"#.utf8)
        JSONWriter.appendQuoted(model, to: &o)
        o += Array(#","usage":{"prompt_tokens":"#.utf8)
        JSONWriter.appendInt(prompt ?? 0, to: &o)
        o += Array(#","total_tokens":"#.utf8)
        JSONWriter.appendInt(prompt ?? 0, to: &o)
        o += Array("}}".utf8)
        return o
    }
}

/// Turns a request's events into SSE chunks. After a `retry` (a worker lost mid-answer), the
/// next attempt's text is checked against what was already sent and only the rest goes out;
/// an attempt that says something else ends the stream with an error chunk.
struct Streamer {
    let encoder: OpenAIEncoder
    let includeUsage: Bool
    private var sent: [UInt8] = []
    private var replay: Int?
    private var roleSent = false
    private(set) var stopped = false

    init(encoder: OpenAIEncoder, includeUsage: Bool) {
        self.encoder = encoder
        self.includeUsage = includeUsage
    }

    mutating func encode(_ e: FarmEvent) -> [UInt8] {
        switch e {
        case .chunk(var t):
            if let r = replay {
                let overlap = min(t.count, sent.count - r)
                guard sent[r..<(r + overlap)].elementsEqual(t[0..<overlap]) else {
                    stopped = true
                    return encoder.errorChunk(.init(.badGateway, type: "server_error", code: "worker_lost",
                                                    "the answer restarted on another worker and differs from what was streamed; send the request again"))
                }
                t.removeFirst(overlap)
                replay = r + overlap < sent.count ? r + overlap : nil
                if t.isEmpty { return [] }
            }
            sent += t
            defer { roleSent = true }
            return encoder.textChunk(escaped: t, role: !roleSent && encoder.kind == .chat)
        case .toolCall(let index, let callID, let name, let args):
            guard replay == nil else { return [] }
            var out: [UInt8] = []
            if !roleSent && encoder.kind == .chat { out = encoder.textChunk(escaped: [], role: true); roleSent = true }
            return out + encoder.toolCallChunk(index: index, callID: callID, name: name, escapedArguments: args)
        case .retry:
            replay = sent.isEmpty ? nil : 0
            return []
        case .done(let reason, let p, let c):
            var out: [UInt8] = []
            if !roleSent && encoder.kind == .chat { out = encoder.textChunk(escaped: [], role: true) }
            out += encoder.finishChunk(reason)
            if includeUsage { out += encoder.usageChunk(prompt: p, completion: c) }
            return out + OpenAIEncoder.done
        case .error(let code, let message, let after):
            stopped = true
            return encoder.errorChunk(GatewayError.fromEvent(code: code, message: message, retryAfter: after))
        case .start, .embedding, .other:
            return []
        }
    }
}
