import Foundation
import Hummingbird

/// Answers Cohere's v2 API: `POST /v2/chat` (with `stream: true`, SSE events typed
/// message-start, content-start/delta/end, tool-plan-delta, tool-call-start/delta/end,
/// message-end with finish_reason and usage) and `POST /v2/embed`.
struct SimCohereEndpoint: Sendable {
    let state: SimState
    let player: SimStreamPlayer
    let format = SimWireFormat.cohere

    func respond(to request: Request, context: some RequestContext, embed: Bool) async throws -> Response {
        var request = request
        switch try await SimIntake.read(&request, context: context, state: state, format: format, model: { $0["model"]?.string }) {
        case .failure(let e): return format.response(e)
        case .success(let intake):
            do throws(SimAPIError) {
                return try embed ? self.embed(request, intake) : chat(request, intake)
            } catch {
                return format.response(error)
            }
        }
    }

    private func invalid(_ m: String) -> SimAPIError { SimAPIError(status: .badRequest, message: m, type: "", code: nil) }

    private func chat(_ request: Request, _ intake: SimIntake) throws(SimAPIError) -> Response {
        let body = intake.body
        guard body["model"]?.string != nil else { throw invalid("invalid request: model must be specified") }
        guard let messages = body["messages"]?.array, !messages.isEmpty else { throw invalid("invalid request: messages must not be empty") }
        for m in messages {
            guard let role = m["role"]?.string, ["system", "user", "assistant", "tool"].contains(role) else {
                throw invalid("invalid request: message role must be one of system, user, assistant, tool")
            }
        }
        let tools = (body["tools"]?.array ?? []).compactMap { $0["function"]?["name"]?.string }
        let tool = try intake.tool(declared: tools, format: format)
        var output: SimStructuredOutput?
        if let rf = body["response_format"] {
            guard rf["type"]?.string == "json_object" else { throw invalid("invalid request: response_format.type must be text or json_object") }
            output = rf["json_schema"].map(SimStructuredOutput.init(schema:)) ?? .jsonObject
        }
        let prompt = max(1, messages.reduce(0) { $0 + ($1["content"]?.wordCount ?? 0) })
        let transcript = SimTranscript(knobs: intake.knobs, tokenLimit: body["max_tokens"]?.int, promptTokens: prompt, output: output)
        let finish = tool != nil ? "TOOL_CALL" : transcript.finishReason == "length" ? "MAX_TOKENS" : "COMPLETE"
        let usage: SimJSON = [
            "billed_units": ["input_tokens": .int(prompt), "output_tokens": .int(transcript.completionTokens)],
            "tokens": ["input_tokens": .int(prompt), "output_tokens": .int(transcript.completionTokens)],
        ]
        let id = "sim-\(intake.serial)"
        guard body["stream"]?.bool == true else {
            var message: [(String, SimJSON)] = [("role", "assistant")]
            if let tool {
                message.append(("tool_plan", "I will call the tool."))
                message.append(("tool_calls", [["id": "call_sim_1", "type": "function", "function": ["name": .string(tool), "arguments": .string(SimTranscript.toolArguments)]]]))
            } else {
                message.append(("content", [["type": "text", "text": .string(transcript.text)]]))
            }
            return player.jsonResponse(["id": .string(id), "finish_reason": .string(finish), "message": .object(message), "usage": usage], for: request, fault: intake.fault, knobs: intake.knobs)
        }
        func event(_ type: String, _ json: [(String, SimJSON)]) -> ByteBuffer {
            SimScript.sse(.object([("type", .string(type))] + json), event: type)
        }
        let start = event("message-start", [("id", .string(id)), ("delta", ["message": ["role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []]])])
        var head = [start]
        var content: [ByteBuffer]
        var tail: [ByteBuffer]
        if let tool {
            head.append(event("tool-plan-delta", [("delta", ["message": ["tool_plan": "I will call the tool."]])]))
            head.append(event("tool-call-start", [("index", 0), ("delta", ["message": ["tool_calls": ["id": "call_sim_1", "type": "function", "function": ["name": .string(tool), "arguments": ""]]]])]))
            content = transcript.pieces.map { event("tool-call-delta", [("index", 0), ("delta", ["message": ["tool_calls": ["function": ["arguments": .string($0)]]]])]) }
            tail = [event("tool-call-end", [("index", 0)])]
        } else {
            head.append(event("content-start", [("index", 0), ("delta", ["message": ["content": ["type": "text", "text": ""]]])]))
            content = transcript.pieces.map { event("content-delta", [("index", 0), ("delta", ["message": ["content": ["text": .string($0)]]])]) }
            tail = [event("content-end", [("index", 0)])]
        }
        tail.append(event("message-end", [("delta", ["finish_reason": .string(finish), "usage": usage])]))
        let script = SimScript(
            head: head, content: content, tail: tail,
            malformed: ByteBuffer(string: "event: content-delta\ndata: {not json\n\n"),
            errorEvent: event("message-end", [("delta", ["error": "internal server error (simulated)", "finish_reason": "ERROR"])]))
        return player.response(for: request, contentType: "text/event-stream", steps: script.steps(knobs: intake.knobs, fault: intake.fault))
    }

    private func embed(_ request: Request, _ intake: SimIntake) throws(SimAPIError) -> Response {
        let body = intake.body
        guard let texts = body["texts"]?.array?.compactMap(\.string), !texts.isEmpty else { throw invalid("invalid request: texts must be a non-empty list") }
        guard body["input_type"]?.string != nil else { throw invalid("invalid request: input_type is required for embed models v3 and higher") }
        let dim = intake.knobs.dimensions ?? SimEmbeddingEndpoint.defaultDimensions
        let vectors = texts.map { t -> SimJSON in .array(SimEmbedding.vector(for: t, dimensions: dim).map(SimJSON.float)) }
        let tokens = max(1, texts.reduce(0) { $0 + SimText.wordCount($1) })
        let json: SimJSON = [
            "id": .string("sim-\(intake.serial)"), "embeddings": ["float": .array(vectors)], "texts": .array(texts.map(SimJSON.string)),
            "meta": ["api_version": ["version": "2"], "billed_units": ["input_tokens": .int(tokens)]],
        ]
        return player.jsonResponse(json, for: request, fault: intake.fault, knobs: intake.knobs)
    }

    /// `GET /v1/models` in Cohere's form.
    static func models() -> Response {
        let list = SimServer.models.map { id -> SimJSON in ["name": .string(id), "endpoints": ["chat", "embed"]] }
        return SimStreamPlayer.json((["models": .array(list)] as SimJSON).buffer)
    }
}
