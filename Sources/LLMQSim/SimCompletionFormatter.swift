import Hummingbird

/// Writes a transcript in the wire format of one completion endpoint: server-sent events
/// when streaming, one JSON object otherwise.
struct SimCompletionFormatter: Sendable {
    enum Endpoint: Sendable {
        /// `/v1/chat/completions`: `delta.content`, `message.content`, tool calls.
        case chat
        /// `/v1/completions`: `text`.
        case text
    }

    static let done = ByteBuffer(string: "data: [DONE]\n\n")
    static let malformed = ByteBuffer(string: "data: {not json\n\n")
    static let errorEvent = ByteBuffer(
        string: #"data: {"error":{"message":"The server had an error while processing your request (simulated).","type":"server_error","param":null,"code":null}}"# + "\n\n")
    static let toolCallID = "call_sim_1"

    var endpoint: Endpoint
    var id: String
    var created: Int
    var model: String

    init(endpoint: Endpoint, serial: Int, created: Int, model: String) {
        self.endpoint = endpoint
        self.id = (endpoint == .chat ? "chatcmpl-sim-" : "cmpl-sim-") + String(serial)
        self.created = created
        self.model = model
    }

    /// The events that carry content, in order; mid-stream faults strike between them.
    func contentEvents(_ transcript: SimTranscript) -> [ByteBuffer] {
        switch (self.endpoint, transcript.content) {
        case (.text, _):
            return transcript.pieces.map { self.event(choice: ["index": 0, "text": .string($0), "logprobs": nil, "finish_reason": nil]) }
        case (.chat, .text):
            return transcript.pieces.enumerated().map { index, piece in
                let delta: SimJSON = index == 0 ? ["role": "assistant", "content": .string(piece)] : ["content": .string(piece)]
                return self.event(choice: ["index": 0, "delta": delta, "finish_reason": nil])
            }
        case (.chat, .toolCall(let name)):
            let opening: SimJSON = [
                "index": 0, "id": .string(Self.toolCallID), "type": "function",
                "function": ["name": .string(name), "arguments": ""],
            ]
            let head = self.event(choice: ["index": 0, "delta": ["role": "assistant", "tool_calls": [opening]], "finish_reason": nil])
            return [head]
                + transcript.pieces.map { piece in
                    let call: SimJSON = ["index": 0, "function": ["arguments": .string(piece)]]
                    return self.event(choice: ["index": 0, "delta": ["tool_calls": [call]], "finish_reason": nil])
                }
        }
    }

    func finishEvent(_ transcript: SimTranscript) -> ByteBuffer {
        let reason = SimJSON.string(transcript.finishReason)
        switch self.endpoint {
        case .chat: return self.event(choice: ["index": 0, "delta": [:], "finish_reason": reason])
        case .text: return self.event(choice: ["index": 0, "text": "", "logprobs": nil, "finish_reason": reason])
        }
    }

    func usageEvent(_ transcript: SimTranscript) -> ByteBuffer {
        Self.event(self.envelope(object: self.chunkObject, choices: [], usage: Self.usage(transcript)))
    }

    /// The whole answer for a request that did not ask to stream.
    func completion(_ transcript: SimTranscript) -> SimJSON {
        let choice: SimJSON
        switch (self.endpoint, transcript.content) {
        case (.text, _):
            choice = ["index": 0, "text": .string(transcript.text), "logprobs": nil, "finish_reason": .string(transcript.finishReason)]
        case (.chat, .text):
            choice = [
                "index": 0, "message": ["role": "assistant", "content": .string(transcript.text)],
                "logprobs": nil, "finish_reason": .string(transcript.finishReason),
            ]
        case (.chat, .toolCall(let name)):
            let call: SimJSON = [
                "id": .string(Self.toolCallID), "type": "function",
                "function": ["name": .string(name), "arguments": .string(transcript.text)],
            ]
            choice = [
                "index": 0, "message": ["role": "assistant", "content": nil, "tool_calls": [call]],
                "logprobs": nil, "finish_reason": .string(transcript.finishReason),
            ]
        }
        let object = self.endpoint == .chat ? "chat.completion" : "text_completion"
        return self.envelope(object: object, choices: [choice], usage: Self.usage(transcript))
    }

    private var chunkObject: String {
        self.endpoint == .chat ? "chat.completion.chunk" : "text_completion"
    }

    private func event(choice: SimJSON) -> ByteBuffer {
        Self.event(self.envelope(object: self.chunkObject, choices: [choice], usage: nil))
    }

    private func envelope(object: String, choices: [SimJSON], usage: SimJSON?) -> SimJSON {
        var members: [(String, SimJSON)] = [
            ("id", .string(self.id)), ("object", .string(object)), ("created", .int(self.created)),
            ("model", .string(self.model)), ("choices", .array(choices)),
        ]
        if let usage { members.append(("usage", usage)) }
        return .object(members)
    }

    private static func event(_ json: SimJSON) -> ByteBuffer {
        ByteBuffer(string: "data: " + json.encoded + "\n\n")
    }

    private static func usage(_ transcript: SimTranscript) -> SimJSON {
        [
            "prompt_tokens": .int(transcript.promptTokens),
            "completion_tokens": .int(transcript.completionTokens),
            "total_tokens": .int(transcript.promptTokens + transcript.completionTokens),
        ]
    }
}
