import Foundation
import Hummingbird

/// Answers `/v1/chat/completions` and `/v1/completions`, streamed or whole.
struct SimCompletionEndpoint: Sendable {
    let endpoint: SimCompletionFormatter.Endpoint
    let state: SimState
    let player: SimStreamPlayer

    /// `deployment` is the model named by the path (Azure's `/openai/deployments/NAME/…`).
    func respond(to request: Request, context: some RequestContext, deployment: String? = nil) async throws -> Response {
        var request = request
        let serial = await self.state.admit()
        let bytes = try await request.collectBody(upTo: context.maxUploadSize)
        do {
            var body = try SimRequestBody.decode(bytes)
            if let deployment { body.model = deployment }
            return try await self.answer(request, body: body, serial: serial)
        } catch {
            return error.response
        }
    }

    private func answer(_ request: Request, body: SimRequestBody, serial: Int) async throws(SimAPIError) -> Response {
        let model = body.model ?? "sim-1"
        let knobs = try SimKnobs(model: model, headers: request.headers)
        try SimWireFormat.openAI.checkAuth(knobs, request: request)
        if knobs.fault == .safety {
            throw .invalidKnob("Sim knob 'fault=safety' applies to Gemini's endpoints only.")
        }
        if knobs.tool != nil, self.endpoint == .text {
            throw .invalidKnob("Sim knob 'tool' applies to /v1/chat/completions only.")
        }
        if let limit = body.tokenLimit, limit < 1 {
            throw SimAPIError(
                status: .badRequest, message: "max_tokens must be at least 1, not \(limit).",
                type: "invalid_request_error", code: "invalid_value")
        }
        let fault = await self.state.fault(for: knobs)
        if var error = fault?.apiError(model: model, retryAfter: knobs.retryAfter) {
            error.retryHint = knobs.retryHint
            throw error
        }
        let transcript = SimTranscript(
            knobs: knobs, tokenLimit: body.tokenLimit, promptTokens: body.promptTokens,
            output: SimStructuredOutput(openAI: body.responseFormat))
        let formatter = SimCompletionFormatter(
            endpoint: self.endpoint, serial: serial, created: Int(Date().timeIntervalSince1970), model: model)

        if body.stream == true {
            let steps = Self.steps(formatter: formatter, transcript: transcript, knobs: knobs, fault: fault, usage: body.wantsUsage)
            return self.player.response(for: request, contentType: "text/event-stream", steps: steps)
        }
        // A whole answer arrives when the last token would have.
        let events = formatter.contentEvents(transcript).count
        let latency = knobs.firstMilliseconds + knobs.delayMilliseconds * max(0, events - 1)
        if latency > 0 {
            try? await Task.sleep(for: .milliseconds(latency))
        }
        return self.player.jsonResponse(formatter.completion(transcript), for: request, fault: fault, knobs: knobs)
    }

    private static func steps(
        formatter: SimCompletionFormatter,
        transcript: SimTranscript,
        knobs: SimKnobs,
        fault: SimFault?,
        usage: Bool
    ) -> [SimStep] {
        if fault == .gzipBomb { return [.gzipBomb] }
        let events = formatter.contentEvents(transcript)
        let faultAt = min(knobs.afterTokens, events.count)
        var steps: [SimStep] = []
        if knobs.firstMilliseconds > 0 {
            steps.append(.pause(milliseconds: knobs.firstMilliseconds))
        }
        for index in 0...events.count {
            if index == faultAt, let fault {
                steps += SimScript.steps(
                    for: fault, malformed: SimCompletionFormatter.malformed, errorEvent: SimCompletionFormatter.errorEvent,
                    repeated: events.last, ndjson: false)
            }
            guard index < events.count else { break }
            if index > 0, knobs.delayMilliseconds > 0 {
                steps.append(.pause(milliseconds: knobs.delayMilliseconds))
            }
            steps.append(.write(events[index]))
        }
        steps.append(.write(formatter.finishEvent(transcript)))
        if usage {
            steps.append(.write(formatter.usageEvent(transcript)))
        }
        steps.append(.write(SimCompletionFormatter.done))
        return SimStep.corrupting(steps, fault: fault, number: knobs.number)
    }
}
