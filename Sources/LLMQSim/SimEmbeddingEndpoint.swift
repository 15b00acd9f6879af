import Hummingbird

/// Answers `/v1/embeddings` with vectors that depend only on the input text.
struct SimEmbeddingEndpoint: Sendable {
    static let defaultDimensions = 8

    let state: SimState
    let player: SimStreamPlayer

    /// `deployment` is the model named by the path (Azure's `/openai/deployments/NAME/…`).
    func respond(to request: Request, context: some RequestContext, deployment: String? = nil) async throws -> Response {
        var request = request
        _ = await self.state.admit()
        let bytes = try await request.collectBody(upTo: context.maxUploadSize)
        do {
            var body = try SimRequestBody.decode(bytes)
            if let deployment { body.model = deployment }
            return try await self.answer(request, body: body)
        } catch {
            return error.response
        }
    }

    private func answer(_ request: Request, body: SimRequestBody) async throws(SimAPIError) -> Response {
        let model = body.model ?? "sim-embed-1"
        let knobs = try SimKnobs(model: model, headers: request.headers)
        try SimWireFormat.openAI.checkAuth(knobs, request: request)
        guard let inputs = body.input?.pieces, !inputs.isEmpty else {
            throw SimAPIError(
                status: .badRequest, message: "'input' is required: a string or a list of strings.",
                type: "invalid_request_error", code: "missing_input")
        }
        await self.state.countEmbeddings(inputs: inputs.count)
        let fault = await self.state.fault(for: knobs)
        if var error = fault?.apiError(model: model, retryAfter: knobs.retryAfter) {
            error.retryHint = knobs.retryHint
            throw error
        }
        if knobs.firstMilliseconds > 0 {
            try? await Task.sleep(for: .milliseconds(knobs.firstMilliseconds))
        }
        let dimensions = knobs.dimensions ?? body.dimensions ?? Self.defaultDimensions
        guard (1...65_536).contains(dimensions) else {
            throw SimAPIError(
                status: .badRequest, message: "'dimensions' must be from 1 to 65536, not \(dimensions).",
                type: "invalid_request_error", code: "invalid_value")
        }
        let data = inputs.enumerated().map { index, text -> SimJSON in
            let vector = SimEmbedding.vector(for: text, dimensions: dimensions).map(SimJSON.float)
            return ["object": "embedding", "index": .int(index), "embedding": .array(vector)]
        }
        let tokens = max(1, inputs.reduce(0) { $0 + SimText.wordCount($1) })
        let json: SimJSON = [
            "object": "list", "data": .array(data), "model": .string(model),
            "usage": ["prompt_tokens": .int(tokens), "total_tokens": .int(tokens)],
        ]
        return self.player.jsonResponse(json, for: request, fault: fault, knobs: knobs)
    }
}
