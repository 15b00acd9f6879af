import Foundation
import Hummingbird

/// The fields of an OpenAI-style request body that the sim reads; everything else (tools,
/// temperature, ...) is accepted and ignored.
struct SimRequestBody: Decodable, Sendable {
    struct Message: Decodable, Sendable {
        var content: SimText?
    }

    struct StreamOptions: Decodable, Sendable {
        var includeUsage: Bool?
    }

    var model: String?
    var messages: [Message]?
    var prompt: SimText?
    var input: SimText?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var dimensions: Int?
    var responseFormat: SimValue?

    static func decode(_ bytes: ByteBuffer) throws(SimAPIError) -> SimRequestBody {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            let data = Data(bytes.readableBytesView)
            var body = try decoder.decode(SimRequestBody.self, from: data)
            // Read again without key conversion: a schema's own keys must stay as written.
            body.responseFormat = try JSONDecoder().decode(ResponseFormat.self, from: data).responseFormat
            return body
        } catch {
            throw SimAPIError(
                status: .badRequest,
                message: "The request body is not a valid JSON request for this endpoint.",
                type: "invalid_request_error",
                code: "invalid_json"
            )
        }
    }

    private struct ResponseFormat: Decodable {
        var responseFormat: SimValue?
        enum CodingKeys: String, CodingKey { case responseFormat = "response_format" }
    }

    var wantsUsage: Bool { self.streamOptions?.includeUsage ?? false }

    var tokenLimit: Int? { self.maxCompletionTokens ?? self.maxTokens }

    /// Words across all message contents, or across the prompt; never less than one.
    var promptTokens: Int {
        let messageWords = (self.messages ?? []).reduce(0) { $0 + ($1.content?.wordCount ?? 0) }
        return max(1, messageWords + (self.prompt?.wordCount ?? 0))
    }
}
