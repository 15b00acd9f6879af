import Foundation
import Hummingbird

/// Answers `POST /v1/messages` as Anthropic's Messages API does: `anthropic-version`
/// required, `max_tokens` required, roles user/assistant only (system is top-level),
/// and with `stream: true` the SSE sequence message_start, content_block_start, ping,
/// content_block_delta (text_delta / input_json_delta), content_block_stop,
/// message_delta (stop_reason, usage), message_stop.
struct SimAnthropicEndpoint: Sendable {
    let state: SimState
    let player: SimStreamPlayer
    let format = SimWireFormat.anthropic

    func respond(to request: Request, context: some RequestContext) async throws -> Response {
        var request = request
        switch try await SimIntake.read(&request, context: context, state: state, format: format, model: { $0["model"]?.string }) {
        case .failure(let e): return format.response(e)
        case .success(let intake):
            do throws(SimAPIError) {
                return try answer(request, intake)
            } catch {
                return format.response(error)
            }
        }
    }

    private func answer(_ request: Request, _ intake: SimIntake) throws(SimAPIError) -> Response {
        func invalid(_ m: String) -> SimAPIError { SimAPIError(status: .badRequest, message: m, type: "invalid_request_error", code: nil) }
        guard request.headers.contains(where: { $0.name.canonicalName == "anthropic-version" }) else {
            throw invalid("anthropic-version: header is required")
        }
        let body = intake.body
        guard let model = body["model"]?.string else { throw invalid("model: Field required") }
        guard let maxTokens = body["max_tokens"]?.int else { throw invalid("max_tokens: Field required") }
        guard let messages = body["messages"]?.array else { throw invalid("messages: Field required") }
        for (i, m) in messages.enumerated() {
            guard let role = m["role"]?.string, role == "user" || role == "assistant" else {
                throw invalid("messages.\(i).role: Input should be 'user' or 'assistant'")
            }
        }
        let tools = (body["tools"]?.array ?? []).compactMap { $0["name"]?.string }
        if let t = body["tools"]?.array, t.contains(where: { $0["input_schema"] == nil }) { throw invalid("tools.0.input_schema: Field required") }
        let tool = try intake.tool(declared: tools, format: format)
        let output = body["output_config"]?["format"]?["schema"].map(SimStructuredOutput.init(schema:))
        let prompt = max(1, messages.reduce(0) { $0 + ($1["content"]?.wordCount ?? 0) } + (body["system"]?.wordCount ?? 0))
        let transcript = SimTranscript(knobs: intake.knobs, tokenLimit: maxTokens, promptTokens: prompt, output: output)
        let stop: String
        switch (tool, transcript.finishReason) {
        case (.some, _): stop = "tool_use"
        case (_, "length"): stop = "max_tokens"
        default: stop = "end_turn"
        }
        let id = "msg_sim_\(intake.serial)"

        guard body["stream"]?.bool == true else {
            let block: SimJSON = tool.map { ["type": "tool_use", "id": "toolu_sim_1", "name": .string($0), "input": ["city": "Paris"]] }
                ?? ["type": "text", "text": .string(transcript.text)]
            let json: SimJSON = [
                "id": .string(id), "type": "message", "role": "assistant", "model": .string(model), "content": [block],
                "stop_reason": .string(stop), "stop_sequence": nil,
                "usage": ["input_tokens": .int(prompt), "output_tokens": .int(transcript.completionTokens)],
            ]
            return player.jsonResponse(json, for: request, fault: intake.fault, knobs: intake.knobs)
        }
        let start: SimJSON = [
            "type": "message_start",
            "message": [
                "id": .string(id), "type": "message", "role": "assistant", "model": .string(model), "content": [],
                "stop_reason": nil, "stop_sequence": nil, "usage": ["input_tokens": .int(prompt), "output_tokens": 1],
            ],
        ]
        let block: SimJSON = tool.map { ["type": "tool_use", "id": "toolu_sim_1", "name": .string($0), "input": [:]] } ?? ["type": "text", "text": ""]
        let content = transcript.pieces.map { piece -> ByteBuffer in
            let delta: SimJSON = tool == nil ? ["type": "text_delta", "text": .string(piece)] : ["type": "input_json_delta", "partial_json": .string(piece)]
            return SimScript.sse(["type": "content_block_delta", "index": 0, "delta": delta], event: "content_block_delta")
        }
        var head = [
            SimScript.sse(start, event: "message_start"),
            SimScript.sse(["type": "content_block_start", "index": 0, "content_block": block], event: "content_block_start"),
            SimScript.sse(["type": "ping"], event: "ping"),
        ]
        if tool != nil {
            // Anthropic opens a tool's input with an empty piece.
            head.append(SimScript.sse(["type": "content_block_delta", "index": 0, "delta": ["type": "input_json_delta", "partial_json": ""]], event: "content_block_delta"))
        }
        let script = SimScript(
            head: head,
            content: content,
            tail: [
                SimScript.sse(["type": "content_block_stop", "index": 0], event: "content_block_stop"),
                SimScript.sse(
                    ["type": "message_delta", "delta": ["stop_reason": .string(stop), "stop_sequence": nil],
                     "usage": ["output_tokens": .int(transcript.completionTokens)]], event: "message_delta"),
                SimScript.sse(["type": "message_stop"], event: "message_stop"),
            ],
            malformed: ByteBuffer(string: "event: content_block_delta\ndata: {not json\n\n"),
            errorEvent: SimScript.sse(["type": "error", "error": ["type": "overloaded_error", "message": "Overloaded (simulated)"]], event: "error"))
        return player.response(for: request, contentType: "text/event-stream", steps: script.steps(knobs: intake.knobs, fault: intake.fault))
    }
}
