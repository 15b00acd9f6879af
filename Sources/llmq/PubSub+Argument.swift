import ArgumentParser
import LLMQ

// Lets `--pubsub` take `sharded` or `classic`.
extension PubSub: ExpressibleByArgument {}
