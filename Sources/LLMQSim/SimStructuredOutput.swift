/// A request's demand for JSON output, in whichever field its wire format puts it
/// (OpenAI `response_format`, Anthropic `output_config.format`, Gemini
/// `generationConfig.responseJsonSchema`, Ollama `format`, Cohere `response_format`,
/// TGI `grammar`). The sim answers it with a document that fits the schema, streamed
/// in pieces, so a client can check the schema arrived where the provider reads it.
enum SimStructuredOutput: Sendable {
    case jsonSchema(SimValue)
    case jsonObject

    /// OpenAI's `response_format`: `{type: json_schema, json_schema: {schema}}` or `{type: json_object}`.
    init?(openAI rf: SimValue?) {
        switch rf?["type"]?.string {
        case "json_schema"?:
            guard let schema = rf?["json_schema"]?["schema"] else { return nil }
            self = .jsonSchema(schema)
        case "json_object"?:
            // TGI's Messages API takes a schema as {type: json_object, value: SCHEMA}.
            self = rf?["value"].map(SimStructuredOutput.init(schema:)) ?? .jsonObject
        default: return nil
        }
    }

    /// A schema given directly (`format`, `responseJsonSchema`, `grammar.value` …); a bare object type is plain JSON mode.
    init(schema: SimValue) {
        self = schema.object.map { $0.count <= 1 } == true && schema["properties"] == nil ? .jsonObject : .jsonSchema(schema)
    }

    var text: String {
        switch self {
        case .jsonObject: #"{"answer":"sim"}"#
        case .jsonSchema(let s): Self.sample(s).encoded
        }
    }

    /// The simplest document that fits the schema: first enum values, one item per array,
    /// every property present (sorted, so answers repeat).
    static func sample(_ schema: SimValue) -> SimJSON {
        if let e = schema["enum"]?.array?.first { return json(e) }
        if let c = schema["const"] { return json(c) }
        if let first = (schema["anyOf"] ?? schema["oneOf"])?.array?.first { return sample(first) }
        var type = schema["type"]?.string
        if let types = schema["type"]?.array { type = types.compactMap(\.string).first { $0 != "null" } ?? "null" }
        if type == nil && schema["properties"] != nil { type = "object" }
        switch type {
        case "string"?: return "sim"
        case "integer"?: return 1
        case "number"?: return .double(1.5)
        case "boolean"?: return .bool(true)
        case "null"?: return nil
        case "array"?: return .array([schema["items"].map(sample) ?? "sim"])
        default:
            let props = schema["properties"]?.object ?? [:]
            return .object(props.keys.sorted().map { ($0, sample(props[$0]!)) })
        }
    }

    static func json(_ v: SimValue) -> SimJSON {
        switch v {
        case .null: nil
        case .bool(let b): .bool(b)
        case .number(let d): d.rounded() == d && abs(d) < 1e15 ? .int(Int(d)) : .double(d)
        case .string(let s): .string(s)
        case .array(let a): .array(a.map(json))
        case .object(let o): .object(o.keys.sorted().map { ($0, json(o[$0]!)) })
        }
    }

    /// The document in pieces of a few characters, as a model would stream it.
    var pieces: [String] {
        var out: [String] = []
        var piece = ""
        for ch in text {
            piece.append(ch)
            if piece.count == 6 {
                out.append(piece)
                piece = ""
            }
        }
        if !piece.isEmpty { out.append(piece) }
        return out
    }
}

extension SimTranscript {
    /// As `init(knobs:tokenLimit:promptTokens:)`, but a request for JSON output gets a fitting document
    /// (a tool call, when the knobs ask for one, still wins).
    init(knobs: SimKnobs, tokenLimit: Int?, promptTokens: Int, output: SimStructuredOutput?) {
        self.init(knobs: knobs, tokenLimit: tokenLimit, promptTokens: promptTokens)
        if let output, knobs.tool == nil {
            self.pieces = output.pieces
            self.finishReason = "stop"
        }
    }
}
