import Foundation
import ServiceLifecycle

/// Runs a blocking `loop` on a thread of its own until it returns, asking it
/// to stop (`stop`) when the task is cancelled or, with `untilShutdown`, when the
/// service group shuts down gracefully. For services built around blocking C
/// calls, which must stay off the cooperative pool.
///
/// Parts a drain still needs (the heartbeat, the cancel listener) pass
/// `untilShutdown: false`: they run until their task is cancelled, after the
/// running jobs ended.
func runOnThread(named name: String, untilShutdown: Bool = true, loop: @escaping @Sendable () -> Void,
                 stop: @escaping @Sendable () -> Void) async {
    let body = {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let t = Thread {
                loop()
                c.resume()
            }
            t.name = name
            t.start()
        }
    }
    if untilShutdown {
        await withTaskCancellationOrGracefulShutdownHandler(operation: body, onCancelOrGracefulShutdown: stop)
    } else {
        await withTaskCancellationHandler(operation: body, onCancel: stop)
    }
}
