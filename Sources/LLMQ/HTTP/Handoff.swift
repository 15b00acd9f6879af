/// What many threads hand to one, taken a round at a time without copying a buffer.
///
/// The taker swaps its emptied array for the filled one. Taking a copy and emptying the original instead
/// allocates a new buffer every round (the old one is still shared), and above malloc's mmap threshold
/// (128 KiB, reached once more than 8,192 transfers waited at once) each new one is a page larger than
/// the last: the HTTP engine's inbox grew by a page a round for as long as its worker ran.
public struct Handoff<Element> {
    private var items: [Element] = []

    public init() {}

    /// Appends `item`; true when the handoff was empty, so the taker needs waking.
    public mutating func append(_ item: Element) -> Bool {
        items.append(item)
        return items.count == 1
    }

    /// Moves everything handed over into `drained`, which must be empty; its buffer takes this one's place.
    public mutating func take(into drained: inout [Element]) {
        assert(drained.isEmpty, "take(into:) would drop what the array held")
        swap(&items, &drained)
    }

    public var capacity: Int { items.capacity }
}
