import Hummingbird

/// One step of a response body the sim plays out; a body is a list of them, decided
/// before the first byte is sent.
enum SimStep: Sendable {
    case write(ByteBuffer)
    case pause(milliseconds: Int)
    /// Send nothing more, but keep the connection until the client leaves or the hang ends.
    case hang(seconds: Int)
    /// Close the connection without finishing the response.
    case cut
    /// Finish the response here, properly, skipping the steps after it.
    case end
}
