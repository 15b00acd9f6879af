import Foundation

/// A listening TCP socket on 127.0.0.1 at a free port, for the servers a test runs itself.
public enum LoopbackListener {
    /// The listening descriptor (the caller closes it) and its port.
    public static func open(backlog: Int32) throws -> (fd: Int32, port: Int) {
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, len) == 0 && listen(sock, backlog) == 0 && getsockname(sock, $0, &len) == 0 }
        }
        guard bound else {
            close(sock)
            throw TestFailure("cannot listen on loopback: errno \(errno)")
        }
        return (sock, Int(UInt16(bigEndian: addr.sin_port)))
    }
}
