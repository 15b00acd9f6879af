import Foundation

/// A minimal blocking HTTP/1.0 client for tests: GET a loopback URL and read
/// the whole answer, the way a Prometheus scrape or a kubelet probe would.
public enum HTTPProbe {
    public struct Response: Sendable, CustomStringConvertible {
        public let status: Int
        public let body: String
        public var description: String { "HTTP \(status): \(body.prefix(300))" }
    }

    /// nil when nothing listens on the port (or it does not answer within `timeout`).
    public static func get(port: Int, path: String, timeout: Double = 5) -> Response? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return nil }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { return nil }
        let statusLine = text[..<headEnd.lowerBound].split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        return Response(status: status, body: String(text[headEnd.upperBound...]))
    }
}

/// One Prometheus text exposition, parsed for assertions.
public struct MetricsScrape: Sendable, CustomStringConvertible {
    public struct Sample: Sendable {
        public let name: String
        public let labels: [String: String]
        public let value: Double
    }

    public let text: String
    public let samples: [Sample]
    /// Family name → TYPE, and how many TYPE lines each family had.
    public let types: [String: String]
    public let typeLines: [String: Int]

    public init(_ text: String) {
        self.text = text
        var samples: [Sample] = []
        var types: [String: String] = [:]
        var typeLines: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let p = line.split(separator: " ")
                if p.count >= 4 {
                    types[String(p[2])] = String(p[3])
                    typeLines[String(p[2]), default: 0] += 1
                }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let sp = line.lastIndex(of: " "), let value = Double(line[line.index(after: sp)...]) else { continue }
            let series = line[..<sp]
            var labels: [String: String] = [:]
            var name = String(series)
            if let open = series.firstIndex(of: "{"), series.hasSuffix("}") {
                name = String(series[..<open])
                let inner = series[series.index(after: open)..<series.index(before: series.endIndex)]
                var rest = Substring(inner)
                while let eq = rest.firstIndex(of: "=") {
                    let key = rest[..<eq].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                    var i = rest.index(eq, offsetBy: 2)  // past ="
                    var v = ""
                    while i < rest.endIndex && rest[i] != "\"" {
                        if rest[i] == "\\" { i = rest.index(after: i) }
                        v.append(rest[i])
                        i = rest.index(after: i)
                    }
                    labels[key] = v
                    rest = i < rest.endIndex ? rest[rest.index(after: i)...] : ""
                }
            }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        self.samples = samples
        self.types = types
        self.typeLines = typeLines
    }

    /// Sum of the samples named `name` whose labels include `labels`; nil when none matches.
    public func sum(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let m = samples.filter { s in s.name == name && labels.allSatisfy { s.labels[$0.key] == $0.value } }
        return m.isEmpty ? nil : m.reduce(0) { $0 + $1.value }
    }

    public func series(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    public var description: String { text }
}
