import Foundation
import Hummingbird

/// Answers text-generation-inference's `POST /generate_stream` (SSE, one token per
/// event, the last with `generated_text` and `details`), `POST /generate` and
/// `GET /info`. TGI serves one model and its requests name none, so knobs come
/// from the `X-Sim` header here. Its `/v1/chat/completions` is the OpenAI endpoint.
struct SimTGIEndpoint: Sendable {
    let state: SimState
    let player: SimStreamPlayer
    let format = SimWireFormat.tgi
    static let modelID = "sim/tgi-1"

    func respond(to request: Request, context: some RequestContext, stream: Bool) async throws -> Response {
        var request = request
        switch try await SimIntake.read(&request, context: context, state: state, format: format, model: { _ in Self.modelID }) {
        case .failure(let e): return format.response(e)
        case .success(let intake):
            do throws(SimAPIError) {
                return try generate(request, intake, stream: stream)
            } catch {
                return format.response(error)
            }
        }
    }

    private func invalid(_ m: String) -> SimAPIError {
        SimAPIError(status: .init(code: 422, reasonPhrase: "Unprocessable Entity"), message: "Input validation error: \(m)", type: "", code: nil)
    }

    private func generate(_ request: Request, _ intake: SimIntake, stream: Bool) throws(SimAPIError) -> Response {
        let body = intake.body
        guard let inputs = body["inputs"]?.string else { throw invalid("`inputs` must be a string") }
        let parameters = body["parameters"]
        if let t = parameters?["temperature"]?.number, t <= 0 { throw invalid("`temperature` must be strictly positive") }
        if let p = parameters?["top_p"]?.number, p <= 0 || p >= 1 { throw invalid("`top_p` must be > 0.0 and < 1.0") }
        var output: SimStructuredOutput?
        if let g = parameters?["grammar"] {
            guard g["type"]?.string == "json", let schema = g["value"] else { throw invalid("`grammar` must be {type: json, value: SCHEMA} here") }
            output = SimStructuredOutput(schema: schema)
        }
        if intake.knobs.tool != nil { throw SimAPIError.invalidKnob("Sim knob 'tool' applies to TGI's /v1/chat/completions only.") }
        let prompt = max(1, SimText.wordCount(inputs))
        let transcript = SimTranscript(knobs: intake.knobs, tokenLimit: parameters?["max_new_tokens"]?.int, promptTokens: prompt, output: output)
        let length = transcript.finishReason == "length"
        let details: SimJSON = [
            "finish_reason": .string(length ? "length" : "eos_token"), "generated_tokens": .int(transcript.completionTokens + (length ? 0 : 1)),
            "seed": nil, "input_length": .int(prompt),
        ]
        guard stream else {
            var json: [(String, SimJSON)] = [("generated_text", .string(transcript.text))]
            if parameters?["details"]?.bool == true { json.append(("details", details)) }
            return player.jsonResponse(.object(json), for: request, fault: intake.fault, knobs: intake.knobs)
        }
        func token(_ i: Int, _ text: String, special: Bool = false) -> [(String, SimJSON)] {
            [("index", .int(i + 1)), ("token", ["id": .int(1000 + i), "text": .string(text), "logprob": .double(-0.25), "special": .bool(special)])]
        }
        var content = transcript.pieces.enumerated().map { i, piece in
            Self.event(.object(token(i, piece) + [("generated_text", nil), ("details", nil)]))
        }
        let last: ByteBuffer
        if length, !content.isEmpty {
            // The token that reaches max_new_tokens carries the details itself.
            content.removeLast()
            let n = transcript.pieces.count - 1
            last = Self.event(.object(token(n, transcript.pieces[n]) + [("generated_text", .string(transcript.text)), ("details", details)]))
        } else {
            last = Self.event(.object(token(transcript.pieces.count, "</s>", special: true) + [("generated_text", .string(transcript.text)), ("details", details)]))
        }
        let script = SimScript(
            content: content, tail: [last],
            malformed: ByteBuffer(string: "data:{not json\n\n"),
            errorEvent: Self.event(["error": "Request failed during generation: Server error: CUDA out of memory (simulated)", "error_type": "generation"]))
        return player.response(for: request, contentType: "text/event-stream", steps: script.steps(knobs: intake.knobs, fault: intake.fault))
    }

    /// TGI writes `data:` without the optional space.
    static func event(_ json: SimJSON) -> ByteBuffer { ByteBuffer(string: "data:" + json.encoded + "\n\n") }

    /// `GET /info`.
    static func info() -> Response {
        let json: SimJSON = ["model_id": .string(modelID), "model_dtype": "float16", "max_total_tokens": 4096, "version": "3.0.0-sim"]
        return SimStreamPlayer.json(json.buffer)
    }
}
