import Foundation
import LLMQ

/// Writes OpenAI's response objects and stream chunks for one request, as bytes.
/// Text arrives JSON-escaped from the events and is copied in as it is.
struct OpenAIEncoder {
    let kind: OpenAIRequest.Kind
    let id: String
    let model: String
    let created = Int(Date().timeIntervalSince1970)
    private let chunkHead: [UInt8]

    init(kind: OpenAIRequest.Kind, id: String, model: String) {
        self.kind = kind
        self.id = id
        self.model = model
        var h = Array(#"{"id":"#.utf8)
        JSONWriter.appendQuoted(id, to: &h)
        h += Array((kind == .chat ? #","object":"chat.completion.chunk","created":"# : #","object":"text_completion","created":"#).utf8)
        JSONWriter.appendInt(created, to: &h)
        h += Array(#","model":"#.utf8)
        JSONWriter.appendQuoted(model, to: &h)
        h += Array(#","choices":["#.utf8)
        chunkHead = h
    }

    static let done = Array("data: [DONE]\n\n".utf8)

    private func sse(_ body: (inout [UInt8]) -> Void) -> [UInt8] {
        var out = Array("data: ".utf8)
        body(&out)
        out += Array("\n\n".utf8)
        return out
    }

    /// A chunk of text (chat: a delta; completions: a choice's text).
    func textChunk(escaped: [UInt8], role: Bool = false) -> [UInt8] {
        sse { o in
            o += chunkHead
            if kind == .chat {
                o += Array(#"{"index":0,"delta":{"#.utf8)
                if role { o += Array(#""role":"assistant","#.utf8) }
                o += Array(#""content":""#.utf8)
                o += escaped
                o += Array(#""},"logprobs":null,"finish_reason":null}]}"#.utf8)
            } else {
                o += Array(#"{"text":""#.utf8)
                o += escaped
                o += Array(#"","index":0,"logprobs":null,"finish_reason":null}]}"#.utf8)
            }
        }
    }

    func toolCallChunk(index: Int, callID: String?, name: String?, escapedArguments: [UInt8]) -> [UInt8] {
        sse { o in
            o += chunkHead
            o += Array(#"{"index":0,"delta":{"tool_calls":[{"index":"#.utf8)
            JSONWriter.appendInt(index, to: &o)
            if let callID, !callID.isEmpty {
                o += Array(#","id":"#.utf8)
                JSONWriter.appendQuoted(callID, to: &o)
                o += Array(#","type":"function""#.utf8)
            }
            o += Array(#","function":{"#.utf8)
            if let name, !name.isEmpty {
                o += Array(#""name":"#.utf8)
                JSONWriter.appendQuoted(name, to: &o)
                o += Array(",".utf8)
            }
            o += Array(#""arguments":""#.utf8)
            o += escapedArguments
            o += Array(#""}}]},"logprobs":null,"finish_reason":null}]}"#.utf8)
        }
    }

    func finishChunk(_ reason: String) -> [UInt8] {
        sse { o in
            o += chunkHead
            o += Array((kind == .chat ? #"{"index":0,"delta":{},"logprobs":null,"finish_reason":"# : #"{"text":"","index":0,"logprobs":null,"finish_reason":"#).utf8)
            JSONWriter.appendQuoted(reason, to: &o)
            o += Array("}]}".utf8)
        }
    }

    func usageChunk(prompt: Int?, completion: Int?) -> [UInt8] {
        sse { o in
            o += chunkHead
            o += Array("],\"usage\":".utf8)
            Self.usage(prompt: prompt, completion: completion, into: &o)
            o += Array("}".utf8)
        }
    }

    func errorChunk(_ e: GatewayError) -> [UInt8] {
        sse { o in o += e.json }
    }

    static func usage(prompt: Int?, completion: Int?, into o: inout [UInt8]) {
        o += Array(#"{"prompt_tokens":"#.utf8)
        JSONWriter.appendInt(prompt ?? 0, to: &o)
        o += Array(#","completion_tokens":"#.utf8)
        JSONWriter.appendInt(completion ?? 0, to: &o)
        o += Array(#","total_tokens":"#.utf8)
        JSONWriter.appendInt((prompt ?? 0) + (completion ?? 0), to: &o)
        o += Array("}".utf8)
    }

    /// The whole answer of a request that did not stream.
    func response(text: [UInt8], toolCalls: [ToolCall], finishReason: String, prompt: Int?, completion: Int?) -> [UInt8] {
        var o = Array(#"{"id":"#.utf8)
        JSONWriter.appendQuoted(id, to: &o)
        o += Array((kind == .chat ? #","object":"chat.completion","created":"# : #","object":"text_completion","created":"#).utf8)
        JSONWriter.appendInt(created, to: &o)
        o += Array(#","model":"#.utf8)
        JSONWriter.appendQuoted(model, to: &o)
        if kind == .chat {
            o += Array(#","choices":[{"index":0,"message":{"role":"assistant","content":"#.utf8)
            if text.isEmpty && !toolCalls.isEmpty {
                o += Array("null".utf8)
            } else {
                o += Array("\"".utf8) + text + Array("\"".utf8)
            }
            if !toolCalls.isEmpty {
                o += Array(#","tool_calls":["#.utf8)
                for (n, t) in toolCalls.enumerated() {
                    if n > 0 { o.append(UInt8(ascii: ",")) }
                    o += Array(#"{"id":"#.utf8)
                    JSONWriter.appendQuoted(t.callID, to: &o)
                    o += Array(#","type":"function","function":{"name":"#.utf8)
                    JSONWriter.appendQuoted(t.name, to: &o)
                    o += Array(#","arguments":""#.utf8) + t.escapedArguments + Array("\"}}".utf8)
                }
                o += Array("]".utf8)
            }
            o += Array(#","refusal":null},"logprobs":null,"finish_reason":"#.utf8)
        } else {
            o += Array(#","choices":[{"text":""#.utf8) + text + Array(#"","index":0,"logprobs":null,"finish_reason":"#.utf8)
        }
        JSONWriter.appendQuoted(finishReason, to: &o)
        o += Array(#"}],"usage":"#.utf8)
        Self.usage(prompt: prompt, completion: completion, into: &o)
        o += Array("}".utf8)
        return o
    }

    struct ToolCall {
        var index: Int
        var callID: String
        var name: String
        var escapedArguments: [UInt8]
    }
}
