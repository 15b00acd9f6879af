/// Text in any shape the OpenAI API accepts for a prompt, an embedding input or a message
/// content: a string, a list of strings, token ids, lists of token ids, or content parts.
struct SimText: Decodable, Sendable {
    /// One entry per input; token ids become words, so counting words still counts tokens.
    var pieces: [String]

    private struct ContentPart: Decodable {
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self.pieces = []
        } else if let text = try? container.decode(String.self) {
            self.pieces = [text]
        } else if let texts = try? container.decode([String].self) {
            self.pieces = texts
        } else if let tokens = try? container.decode([Int].self) {
            self.pieces = [Self.words(tokens)]
        } else if let lists = try? container.decode([[Int]].self) {
            self.pieces = lists.map(Self.words)
        } else {
            let parts = try container.decode([ContentPart].self)
            self.pieces = [parts.compactMap(\.text).joined(separator: " ")]
        }
    }

    var wordCount: Int {
        self.pieces.reduce(0) { $0 + Self.wordCount($1) }
    }

    static func wordCount(_ text: String) -> Int {
        text.split(whereSeparator: \.isWhitespace).count
    }

    private static func words(_ tokens: [Int]) -> String {
        tokens.map { "t\($0)" }.joined(separator: " ")
    }
}
