import Foundation
import Hummingbird

/// Answers Gemini's `POST /v1beta/models/MODEL:METHOD` for `streamGenerateContent`
/// (SSE with `?alt=sse`, a JSON array without), `generateContent` and
/// `batchEmbedContents`, the way the Gemini API does: roles user/model only,
/// system text in `systemInstruction`, each streamed event a whole
/// `GenerateContentResponse` with cumulative `usageMetadata`, the last with `finishReason`.
struct SimGeminiEndpoint: Sendable {
    let state: SimState
    let player: SimStreamPlayer
    let format = SimWireFormat.gemini

    /// Splits `MODEL:METHOD` (the model may hold colons of its own, e.g. sim knobs).
    static func split(_ target: String) -> (model: String, method: String)? {
        guard let colon = target.lastIndex(of: ":") else { return nil }
        return (String(target[..<colon]), String(target[target.index(after: colon)...]))
    }

    func respond(to request: Request, context: some RequestContext, target: String) async throws -> Response {
        var request = request
        guard let (model, method) = Self.split(target.removingPercentEncoding ?? target) else {
            return format.response(SimAPIError(status: .notFound, message: "Unknown path models/\(target); use models/MODEL:METHOD.", type: "", code: nil))
        }
        switch try await SimIntake.read(&request, context: context, state: state, format: format, model: { _ in model }) {
        case .failure(let e): return format.response(e)
        case .success(let intake):
            do throws(SimAPIError) {
                switch method {
                case "streamGenerateContent", "generateContent": return try generate(request, intake, model: model, stream: method == "streamGenerateContent")
                case "batchEmbedContents": return try embed(request, intake)
                default: throw SimAPIError(status: .notFound, message: "Method \(method) is not served by the sim.", type: "", code: nil)
                }
            } catch {
                return format.response(error)
            }
        }
    }

    private func invalid(_ m: String) -> SimAPIError { SimAPIError(status: .badRequest, message: m, type: "", code: nil) }

    private func generate(_ request: Request, _ intake: SimIntake, model: String, stream: Bool) throws(SimAPIError) -> Response {
        let body = intake.body
        guard let contents = body["contents"]?.array, !contents.isEmpty else { throw invalid("* GenerateContentRequest.contents: contents is not specified") }
        for c in contents {
            guard let role = c["role"]?.string, role == "user" || role == "model" else {
                throw invalid("Please use a valid role: user, model.")
            }
            guard let parts = c["parts"]?.array, !parts.isEmpty else { throw invalid("* GenerateContentRequest.contents: contents.parts must not be empty.") }
        }
        let declarations = (body["tools"]?.array ?? []).flatMap { $0["functionDeclarations"]?.array ?? [] }
        let tool = try intake.tool(declared: declarations.compactMap { $0["name"]?.string }, format: format)
        let config = body["generationConfig"]
        var output: SimStructuredOutput?
        if let schema = config?["responseJsonSchema"] ?? config?["responseSchema"] {
            guard config?["responseMimeType"]?.string == "application/json" else {
                throw invalid("responseMimeType must be application/json when a response schema is set.")
            }
            output = SimStructuredOutput(schema: schema)
        } else if config?["responseMimeType"]?.string == "application/json" {
            output = .jsonObject
        }
        let prompt = max(1, contents.reduce(0) { $0 + ($1["parts"]?.wordCount ?? 0) } + (body["systemInstruction"]?.wordCount ?? 0))
        let transcript = SimTranscript(knobs: intake.knobs, tokenLimit: config?["maxOutputTokens"]?.int, promptTokens: prompt, output: output)
        let finish = transcript.finishReason == "length" ? "MAX_TOKENS" : "STOP"

        func usage(_ n: Int) -> SimJSON {
            ["promptTokenCount": .int(prompt), "candidatesTokenCount": .int(n), "totalTokenCount": .int(prompt + n)]
        }
        func response(_ parts: [SimJSON], produced: Int, finish: String?) -> SimJSON {
            var candidate: [(String, SimJSON)] = [("content", ["parts": .array(parts), "role": "model"])]
            if let finish { candidate.append(("finishReason", .string(finish))) }
            candidate.append(("index", 0))
            return ["candidates": [.object(candidate)], "usageMetadata": usage(produced), "modelVersion": .string(model)]
        }

        var events: [SimJSON]
        if let tool {
            events = [response([["functionCall": ["name": .string(tool), "args": ["city": "Paris"]]]], produced: 3, finish: "STOP")]
        } else {
            events = transcript.pieces.enumerated().map { i, piece in
                response([["text": .string(piece)]], produced: i + 1, finish: i + 1 == transcript.pieces.count ? finish : nil)
            }
            if events.isEmpty { events = [response([["text": ""]], produced: 0, finish: finish)] }
        }
        if intake.fault == .safety {
            events = [["promptFeedback": ["blockReason": "SAFETY", "safetyRatings": []], "usageMetadata": usage(0), "modelVersion": .string(model)]]
        }
        guard stream else {
            // generateContent: one whole response.
            let whole = tool == nil && intake.fault != .safety ? response([["text": .string(transcript.text)]], produced: transcript.completionTokens, finish: finish) : events[0]
            return player.jsonResponse(whole, for: request, fault: intake.fault, knobs: intake.knobs)
        }
        guard request.uri.queryParameters.get("alt") == "sse" else {
            return player.jsonResponse(.array(events), for: request, fault: intake.fault, knobs: intake.knobs)
        }
        // The last event carries the finish reason; content events are all but the last.
        let script = SimScript(
            content: events.dropLast().map { SimScript.sse($0) },
            tail: events.suffix(1).map { SimScript.sse($0) },
            malformed: ByteBuffer(string: "data: {not json\n\n"),
            errorEvent: SimScript.sse(["error": ["code": 503, "message": "The model is overloaded. Please try again later. (simulated)", "status": "UNAVAILABLE"]]))
        return player.response(for: request, contentType: "text/event-stream", steps: script.steps(knobs: intake.knobs, fault: intake.fault == .safety ? nil : intake.fault))
    }

    private func embed(_ request: Request, _ intake: SimIntake) throws(SimAPIError) -> Response {
        guard let requests = intake.body["requests"]?.array, !requests.isEmpty else { throw invalid("* BatchEmbedContentsRequest.requests: requests is not specified") }
        var vectors: [SimJSON] = []
        for r in requests {
            guard r["model"]?.string?.hasPrefix("models/") == true else { throw invalid("* BatchEmbedContentsRequest.requests[].model: must be models/MODEL") }
            let text = (r["content"]?["parts"]?.array ?? []).compactMap { $0["text"]?.string }.joined()
            let dim = intake.knobs.dimensions ?? r["outputDimensionality"]?.int ?? SimEmbeddingEndpoint.defaultDimensions
            vectors.append(["values": .array(SimEmbedding.vector(for: text, dimensions: dim).map(SimJSON.float))])
        }
        return player.jsonResponse(["embeddings": .array(vectors)], for: request, fault: intake.fault, knobs: intake.knobs)
    }

    /// `GET /v1beta/models`.
    static func models() -> Response {
        let list = SimServer.models.map { id -> SimJSON in
            ["name": .string("models/\(id)"), "displayName": .string(id), "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]]
        }
        return SimStreamPlayer.json((["models": .array(list)] as SimJSON).buffer)
    }
}
