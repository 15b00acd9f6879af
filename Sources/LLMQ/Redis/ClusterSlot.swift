/// Redis Cluster's key → slot function (CRC16/XMODEM of the hash tag, mod 16384),
/// and where a command names its key.
public enum ClusterSlot {
    public static let count = 16384

    private static let table: [UInt16] = (0..<256).map { i -> UInt16 in
        var crc = UInt16(i) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    static func crc16(_ b: UnsafeBufferPointer<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in b { crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)] }
        return crc
    }

    /// The slot of a key: only the part between the first `{` and the next `}` counts when it is not empty.
    public static func of(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let rest = UnsafeBufferPointer(rebasing: key[(open + 1)...])
            if let close = rest.firstIndex(of: UInt8(ascii: "}")), close > 0 {
                return Int(crc16(UnsafeBufferPointer(rebasing: rest[..<close])) & 0x3FFF)
            }
        }
        return Int(crc16(key) & 0x3FFF)
    }

    public static func of(_ key: String) -> Int {
        var k = key
        return k.withUTF8 { of($0) }
    }

    public static func of(_ key: [UInt8]) -> Int { key.withUnsafeBufferPointer { of($0) } }

    /// Where the key of a command sits among its arguments: nil for commands without one
    /// (they go to the node the connection last talked to). `argc` counts the name.
    /// `argument(i)` gives an argument's bytes (upper-cased names are compared).
    static func keyIndex(argc: Int, argument: (Int) -> UnsafeBufferPointer<UInt8>) -> Int? {
        guard argc >= 2 else { return nil }
        let name = argument(0)
        guard name.count <= 16 else { return 1 }
        var upper = [UInt8](repeating: 0, count: name.count)
        for (i, c) in name.enumerated() { upper[i] = c >= 0x61 && c <= 0x7A ? c - 0x20 : c }
        switch String(decoding: upper, as: UTF8.self) {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard argc >= 4, let n = Int(String(decoding: argument(2), as: UTF8.self)), n > 0 else { return nil }
            return 3
        case "XREAD", "XREADGROUP":
            for i in 1..<argc where argument(i).count == 7 {
                if String(decoding: argument(i), as: UTF8.self).uppercased() == "STREAMS" { return i + 1 < argc ? i + 1 : nil }
            }
            return nil
        case "OBJECT", "MEMORY", "XINFO":
            return argc >= 3 ? 2 : nil
        case "PING", "ECHO", "INFO", "PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "PUBSUB",
             "CLUSTER", "SCAN", "TIME", "AUTH", "SELECT", "HELLO", "MULTI", "EXEC", "DISCARD", "DBSIZE", "CLIENT", "CONFIG",
             "SCRIPT", "FUNCTION", "WAIT", "READONLY", "READWRITE", "ASKING", "FLUSHALL", "FLUSHDB", "KEYS", "RANDOMKEY",
             "COMMAND", "SLOWLOG", "LATENCY", "DEBUG", "ROLE", "LASTSAVE", "SAVE", "BGSAVE", "BGREWRITEAOF", "SHUTDOWN",
             "SENTINEL", "REPLICAOF", "SLAVEOF", "MONITOR", "QUIT", "RESET", "ACL":
            return nil
        default:
            return 1
        }
    }
}
