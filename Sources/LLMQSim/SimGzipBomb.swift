import Hummingbird

/// A gzip body that inflates a thousandfold and more: deflate's fixed Huffman codes
/// with one literal zero, then matches of 258 bytes at distance 1, 13 bits each.
/// For the `gzip_bomb` fault: a client must refuse it or cap what it inflates.
enum SimGzipBomb {
    /// Bytes the body inflates to (about 256 MiB).
    static let inflatedSize = 1 + 258 * 1_040_000

    /// Built once; about 1.6 MiB.
    static let body: ByteBuffer = ByteBuffer(bytes: make(matches: 1_040_000))

    /// `matches` must be a multiple of 8: eight matches are 104 bits, 13 whole bytes, and the
    /// bit writer's state after them is what it was before, so one block of 13 bytes repeats.
    static func make(matches: Int) -> [UInt8] {
        precondition(matches % 8 == 0 && matches > 0)
        var bits = BitWriter()
        bits.write(1, count: 1)  // BFINAL
        bits.write(1, count: 2)  // BTYPE 01: fixed Huffman
        bits.writeCode(0x30, length: 8)  // literal 0
        for _ in 0..<8 {
            bits.writeCode(0xC5, length: 8)  // length code 285: 258 bytes
            bits.writeCode(0, length: 5)  // distance code 0: distance 1
        }
        // 115 bits: 14 whole bytes and 3 zero bits pending, as after the first 11 bits.
        let head = bits.bytes
        let block = Array(head[1..<14])
        var out: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]  // gzip, deflate, no name, no mtime, unknown OS
        out.reserveCapacity(out.count + 1 + block.count * (matches / 8) + 10)
        out.append(head[0])
        for _ in 0..<(matches / 8) { out += block }
        out += [0, 0]  // 3 pending zero bits, end of block (256: seven zero bits), padding
        // The CRC-32 is left zero: a client that inflates learns it is wrong only after inflating it all.
        let size = UInt32(truncatingIfNeeded: 1 + 258 * matches)
        out += [0, 0, 0, 0, UInt8(size & 0xff), UInt8((size >> 8) & 0xff), UInt8((size >> 16) & 0xff), UInt8(size >> 24)]
        return out
    }

    /// Deflate's bit order: values LSB first, Huffman codes MSB first.
    private struct BitWriter {
        var bytes: [UInt8] = []
        var current: UInt32 = 0
        var used = 0

        mutating func write(_ value: UInt32, count: Int) {
            for i in 0..<count { push((value >> UInt32(i)) & 1) }
        }

        mutating func writeCode(_ code: UInt32, length: Int) {
            for i in stride(from: length - 1, through: 0, by: -1) { push((code >> UInt32(i)) & 1) }
        }

        private mutating func push(_ bit: UInt32) {
            current |= bit << UInt32(used)
            used += 1
            if used == 8 {
                bytes.append(UInt8(current))
                current = 0
                used = 0
            }
        }

    }
}
