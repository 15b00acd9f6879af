/// A unit vector seeded by a hash of its text: the same text always embeds the same way,
/// different texts almost never do.
enum SimEmbedding {
    static func vector(for text: String, dimensions: Int) -> [Float] {
        // FNV-1a picks the seed, SplitMix64 spreads it; both are fixed, unlike `Hasher`.
        var state: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            state = (state ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        var values = [Double]()
        values.reserveCapacity(dimensions)
        for _ in 0..<dimensions {
            state &+= 0x9e37_79b9_7f4a_7c15
            var mixed = state
            mixed = (mixed ^ (mixed >> 30)) &* 0xbf58_476d_1ce4_e5b9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94d0_49bb_1331_11eb
            mixed ^= mixed >> 31
            values.append(Double(mixed >> 11) / Double(1 << 53) * 2 - 1)
        }
        let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return values.map { Float(norm > 0 ? $0 / norm : 0) }
    }
}
