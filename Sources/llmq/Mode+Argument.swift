import ArgumentParser
import LLMQ

// Lets `--mode` options take a Mode directly; names are checked where the farm is known.
extension Mode: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(argument)
    }
}
