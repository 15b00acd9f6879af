import Foundation
import ServiceLifecycle

/// Runs a blocking `loop` on a thread of its own until it returns, asking it
/// to stop (`stop`) when the task is cancelled or the service group shuts down.
/// For services built around blocking C calls, which must stay off the cooperative pool.
func runOnThread(named name: String, loop: @escaping @Sendable () -> Void, stop: @escaping @Sendable () -> Void) async {
    await withTaskCancellationOrGracefulShutdownHandler {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let t = Thread {
                loop()
                c.resume()
            }
            t.name = name
            t.start()
        }
    } onCancelOrGracefulShutdown: {
        stop()
    }
}
