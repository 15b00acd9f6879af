import Hummingbird

/// How a streamed body plays out in any wire format: an opening, the content
/// events paced by the knobs (mid-stream faults strike between them), a closing.
/// Each format supplies its own events; the pacing and faults are the same for all.
struct SimScript: Sendable {
    /// Events before the first content event (message_start, content_block_start …).
    var head: [ByteBuffer] = []
    var content: [ByteBuffer]
    /// Events after the last content event (finish, usage, end markers).
    var tail: [ByteBuffer]
    /// A broken event in this format's framing (`fault=malformed`).
    var malformed: ByteBuffer
    /// This format's in-stream error (`fault=error_event`); the body ends after it.
    var errorEvent: ByteBuffer
    /// NDJSON rather than SSE (for `endless_data`).
    var ndjson = false

    func steps(knobs: SimKnobs, fault: SimFault?) -> [SimStep] {
        if fault == .gzipBomb { return [.gzipBomb] }
        var steps: [SimStep] = []
        if knobs.firstMilliseconds > 0 { steps.append(.pause(milliseconds: knobs.firstMilliseconds)) }
        steps += head.map { .write($0) }
        let faultAt = min(knobs.afterTokens, content.count)
        for index in 0...content.count {
            if index == faultAt, let fault {
                steps += Self.steps(for: fault, malformed: malformed, errorEvent: errorEvent, repeated: content.last ?? tail.first, ndjson: ndjson)
            }
            guard index < content.count else { break }
            if index > 0, knobs.delayMilliseconds > 0 { steps.append(.pause(milliseconds: knobs.delayMilliseconds)) }
            steps.append(.write(content[index]))
        }
        steps += tail.map { .write($0) }
        return SimStep.corrupting(steps, fault: fault, number: knobs.number)
    }

    /// What a mid-stream fault plays where it strikes, in any format. Endless faults send
    /// at most `floodBytes` (or a million repeats) before cutting, if the client never leaves.
    static func steps(for fault: SimFault, malformed: ByteBuffer, errorEvent: ByteBuffer, repeated: ByteBuffer?, ndjson: Bool) -> [SimStep] {
        let block = 64 << 10
        let opening = ByteBuffer(string: ndjson ? #"{"message":{"content":""# : #"data: {"choices":[{"delta":{"content":""#)
        let endlessLine: [SimStep] = [.write(opening), .flood(ByteBuffer(repeating: UInt8(ascii: "a"), count: block), times: floodBytes / block), .cut]
        switch fault {
        case .stall: return [.hang(seconds: SimStreamPlayer.hangSeconds)]
        case .disconnect: return [.cut]
        case .malformed: return [.write(malformed)]
        case .errorEvent: return [.write(errorEvent), .end]
        case .truncate: return [.end]
        case .endlessLine:
            return endlessLine
        case .endlessData:
            if ndjson { return endlessLine }  // NDJSON has no events of many lines
            let line = "data: " + String(repeating: "a", count: 1017) + "\n"  // 1 KiB a line, no blank line ever
            return [.flood(ByteBuffer(string: String(repeating: line, count: 64)), times: floodBytes / block), .cut]
        case .endlessArgs:
            guard let repeated else { return [] }
            // 64 events a write, so the sim keeps up with a client that reads fast.
            var batch = ByteBuffer()
            for _ in 0..<64 { batch.writeImmutableBuffer(repeated) }
            return [.flood(batch, times: floodBytes / max(1, batch.readableBytes)), .cut]
        default: return []
        }
    }

    /// The most an endless fault sends before it gives up on the client.
    static let floodBytes = 256 << 20

    /// One server-sent event, with an `event:` line when the format names its events.
    static func sse(_ json: SimJSON, event: String? = nil) -> ByteBuffer {
        ByteBuffer(string: (event.map { "event: \($0)\n" } ?? "") + "data: " + json.encoded + "\n\n")
    }

    /// One NDJSON line.
    static func line(_ json: SimJSON) -> ByteBuffer {
        ByteBuffer(string: json.encoded + "\n")
    }
}

/// What every new-format endpoint does first: count the request, read the body and knobs,
/// check the key, and decide the fault.
struct SimIntake: Sendable {
    let serial: Int
    let body: SimValue
    let knobs: SimKnobs
    let fault: SimFault?

    static func read(_ request: inout Request, context: some RequestContext, state: SimState, format: SimWireFormat,
                     model: (SimValue) -> String?) async throws -> Result<SimIntake, SimAPIError> {
        let serial = await state.admit()
        await state.count(format: format.rawValue)
        let bytes = try await request.collectBody(upTo: context.maxUploadSize)
        let body: SimValue
        let knobs: SimKnobs
        do throws(SimAPIError) {
            body = try SimValue.decode(bytes)
            knobs = try SimKnobs(model: model(body) ?? "sim-1", headers: request.headers)
            try format.checkAuth(knobs, request: request)
        } catch {
            return .failure(error)
        }
        if knobs.fault == .safety && format != .gemini {
            return .failure(.invalidKnob("Sim knob 'fault=safety' applies to Gemini's endpoints only."))
        }
        let fault = await state.fault(for: knobs)
        if let fault, var e = fault.apiError(model: model(body) ?? "sim-1", retryAfter: knobs.retryAfter) {
            e.retryHint = knobs.retryHint
            return .failure(e)
        }
        return .success(SimIntake(serial: serial, body: body, knobs: knobs, fault: fault))
    }

    /// The tool the knobs ask to call, checked against the request's declared tools.
    func tool(declared names: [String], format: SimWireFormat) throws(SimAPIError) -> String? {
        guard let tool = knobs.tool else { return nil }
        guard names.contains(tool) else {
            throw SimAPIError(
                status: .badRequest, message: "Sim knob tool=\(tool) needs a tool named \(tool) among the request's tools (\(format.rawValue) form); got \(names).",
                type: "invalid_request_error", code: "tool_not_declared")
        }
        return tool
    }
}
