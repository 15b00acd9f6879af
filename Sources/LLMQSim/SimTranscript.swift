/// What the sim "generates" for a completion: the same pieces for the same knobs, every time.
struct SimTranscript: Sendable {
    /// Cycled word by word; each token is one word and a space, so joined text reads.
    static let sentence = """
        The quick brown fox jumps over the lazy dog while the simulator streams one word at a time \
        so that every client can watch the answer arrive.
        """
    static let words = sentence.split(separator: " ").map(String.init)
    static let toolArguments = #"{"city":"Paris"}"#
    static let toolArgumentPieces = [#"{"city""#, #":"Pa"#, #"ris"}"#]

    enum Content: Sendable {
        case text
        case toolCall(name: String)
    }

    var content: Content
    /// Text tokens, or the pieces of a tool call's arguments.
    var pieces: [String]
    var finishReason: String
    var promptTokens: Int

    var completionTokens: Int { self.pieces.count }

    init(knobs: SimKnobs, tokenLimit: Int?, promptTokens: Int) {
        self.promptTokens = promptTokens
        if let tool = knobs.tool {
            self.content = .toolCall(name: tool)
            self.pieces = Self.toolArgumentPieces
            self.finishReason = "tool_calls"
            return
        }
        var count = knobs.tokens
        self.finishReason = "stop"
        if let tokenLimit, tokenLimit < count {
            count = tokenLimit
            self.finishReason = "length"
        }
        self.content = .text
        self.pieces = (0..<count).map { Self.words[$0 % Self.words.count] + " " }
    }

    var text: String { self.pieces.joined() }
}
