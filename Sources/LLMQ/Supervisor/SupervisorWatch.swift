import Foundation
import Logging
import ServiceLifecycle

/// Runs in a worker started by a supervisor and returns (so the worker's
/// service group drains and exits) once that supervisor is gone.
///
/// A supervisor killed with SIGKILL, or by the OOM killer, has no chance to
/// drain its workers; without this they would run on as orphans under ids a new
/// farm reuses for its own workers. The kernel reparents an orphan, so its
/// parent pid changes; that is checked twice a second (`PR_SET_PDEATHSIG` would
/// fire when the supervisor's spawning thread exits, which pool threads do).
public struct SupervisorWatch: Service {
    /// The variable the supervisor sets in its workers' environment to its pid.
    public static let environmentKey = "LLMQ_SUPERVISOR_PID"

    let supervisor: pid_t
    let interval: Duration
    let logger: Logger

    public init(supervisor: pid_t, interval: Duration = .milliseconds(500), logger: Logger) {
        self.supervisor = supervisor
        self.interval = interval
        self.logger = logger
    }

    /// The watch for this process when a supervisor started it, else nil.
    public static func fromEnvironment(logger: Logger) -> SupervisorWatch? {
        guard let text = ProcessInfo.processInfo.environment[environmentKey], let pid = pid_t(text), pid > 1 else { return nil }
        return SupervisorWatch(supervisor: pid, logger: logger)
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if getppid() != supervisor {
                logger.warning("the supervisor (pid \(supervisor)) is gone; draining and exiting")
                return
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
