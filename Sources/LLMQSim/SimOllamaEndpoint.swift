import Foundation
import Hummingbird

/// Answers Ollama's native API: `POST /api/chat` and `/api/generate` (NDJSON, streamed
/// unless `stream: false`; the last line has `done: true`, `done_reason`,
/// `prompt_eval_count`, `eval_count`), `POST /api/embed`, and `GET /api/tags`.
struct SimOllamaEndpoint: Sendable {
    enum Kind: Sendable { case chat, generate, embed }

    let state: SimState
    let player: SimStreamPlayer
    let format = SimWireFormat.ollama
    static let createdAt = "2025-01-01T00:00:00.000000Z"

    func respond(to request: Request, context: some RequestContext, kind: Kind) async throws -> Response {
        var request = request
        switch try await SimIntake.read(&request, context: context, state: state, format: format, model: { $0["model"]?.string }) {
        case .failure(let e): return format.response(e)
        case .success(let intake):
            do throws(SimAPIError) {
                return try kind == .embed ? embed(request, intake) : generate(request, intake, chat: kind == .chat)
            } catch {
                return format.response(error)
            }
        }
    }

    private func invalid(_ m: String) -> SimAPIError { SimAPIError(status: .badRequest, message: m, type: "", code: nil) }

    private func generate(_ request: Request, _ intake: SimIntake, chat: Bool) throws(SimAPIError) -> Response {
        let body = intake.body
        guard let model = body["model"]?.string else { throw invalid("model is required") }
        var prompt = 0
        if chat {
            guard let messages = body["messages"]?.array else { throw invalid("messages is required") }
            for m in messages {
                // Ollama's Go types take content as a string; lists of parts do not decode.
                if let c = m["content"], c.string == nil {
                    throw invalid("json: cannot unmarshal \(c.array != nil ? "array" : "object") into Go struct field Message.messages.content of type string")
                }
                if let calls = m["tool_calls"]?.array, calls.contains(where: { $0["function"]?["arguments"]?.object == nil }) {
                    throw invalid("json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments")
                }
                prompt += m["content"]?.wordCount ?? 0
            }
        } else {
            guard let p = body["prompt"]?.string else { throw invalid("prompt is required") }
            prompt = SimText.wordCount(p)
        }
        prompt = max(1, prompt)
        let tools = (body["tools"]?.array ?? []).compactMap { $0["function"]?["name"]?.string }
        let tool = chat ? try intake.tool(declared: tools, format: format) : nil
        var output: SimStructuredOutput?
        switch body["format"] {
        case .string("json")?: output = .jsonObject
        case let s? where s.object != nil: output = SimStructuredOutput(schema: s)
        case nil, .string("")?: break
        default: throw invalid("invalid format: expected \"json\" or a JSON schema")
        }
        let transcript = SimTranscript(knobs: intake.knobs, tokenLimit: body["options"]?["num_predict"]?.int, promptTokens: prompt, output: output)

        func line(_ text: String, done: Bool, toolCall: String? = nil) -> SimJSON {
            var o: [(String, SimJSON)] = [("model", .string(model)), ("created_at", .string(Self.createdAt))]
            if chat {
                var message: [(String, SimJSON)] = [("role", "assistant"), ("content", .string(text))]
                if let toolCall { message.append(("tool_calls", [["function": ["name": .string(toolCall), "arguments": ["city": "Paris"]]]])) }
                o.append(("message", .object(message)))
            } else {
                o.append(("response", .string(text)))
            }
            o.append(("done", .bool(done)))
            if done {
                o += [
                    ("done_reason", .string(transcript.finishReason == "length" ? "length" : "stop")),
                    ("total_duration", 1_000_000), ("load_duration", 100_000), ("prompt_eval_count", .int(prompt)),
                    ("prompt_eval_duration", 200_000), ("eval_count", .int(tool != nil ? 5 : transcript.completionTokens)), ("eval_duration", 700_000),
                ]
            }
            return .object(o)
        }
        guard body["stream"]?.bool ?? true else {
            return player.jsonResponse(line(tool == nil ? transcript.text : "", done: true, toolCall: tool), for: request, fault: intake.fault, knobs: intake.knobs)
        }
        let content = tool.map { [SimScript.line(line("", done: false, toolCall: $0))] } ?? transcript.pieces.map { SimScript.line(line($0, done: false)) }
        let script = SimScript(
            content: content,
            tail: [SimScript.line(line("", done: true))],
            malformed: ByteBuffer(string: "{not json\n"),
            errorEvent: SimScript.line(["error": "an error was encountered while running the model: unexpected EOF (simulated)"]),
            ndjson: true)
        return player.response(for: request, contentType: "application/x-ndjson", steps: script.steps(knobs: intake.knobs, fault: intake.fault))
    }

    private func embed(_ request: Request, _ intake: SimIntake) throws(SimAPIError) -> Response {
        let body = intake.body
        guard let model = body["model"]?.string else { throw invalid("model is required") }
        let inputs: [String]
        switch body["input"] {
        case .string(let s)?: inputs = [s]
        case .array(let a)?: inputs = a.compactMap(\.string)
        default: throw invalid("invalid input type")
        }
        let dim = intake.knobs.dimensions ?? SimEmbeddingEndpoint.defaultDimensions
        let json: SimJSON = [
            "model": .string(model),
            "embeddings": .array(inputs.map { .array(SimEmbedding.vector(for: $0, dimensions: dim).map(SimJSON.float)) }),
            "total_duration": 1_000_000, "load_duration": 100_000,
            "prompt_eval_count": .int(max(1, inputs.reduce(0) { $0 + SimText.wordCount($1) })),
        ]
        return player.jsonResponse(json, for: request, fault: intake.fault, knobs: intake.knobs)
    }

    /// `GET /api/tags`.
    static func tags() -> Response {
        let list = SimServer.models.map { id -> SimJSON in
            [
                "name": .string("\(id):latest"), "model": .string("\(id):latest"), "modified_at": .string(createdAt), "size": 1_000_000,
                "digest": "sha256:0000", "details": ["format": "gguf", "family": "sim", "parameter_size": "1B", "quantization_level": "Q4_0"],
            ]
        }
        return SimStreamPlayer.json((["models": .array(list)] as SimJSON).buffer)
    }
}
