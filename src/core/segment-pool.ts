// Payload segments used again instead of allocated per message.
//
// A segment is a Buffer of exactly the length asked for, over an ArrayBuffer of a power-of-two class
// the pool owns: the Buffer itself names its segment (its `.buffer`), so whoever holds a decoded
// message's data holds the segment, and gives it back by handing that same data to give(). A new
// ArrayBuffer per payload is what made V8 collect (it counts such memory as external and collects
// once enough was allocated since the last collection); a small Buffer object over a pooled one is
// young-generation garbage, which costs next to nothing.
//
// Each segment has one owner at a time and one release point. A segment not given back (its holder
// failed and something may still write it) is simply left to the collector: the pool keeps no
// strong reference to a segment it lent, so forgetting costs a lost reuse, never a leak.

/** The smallest class: smaller payloads are as cheap to take from a 4 KiB ArrayBuffer. */
export const MIN_SEGMENT_CLASS_BYTES = 4096;

export class SegmentPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** Every ArrayBuffer this pool made: give() takes back only these (never a view of Node's shared slab). */
  private readonly made = new WeakSet<ArrayBufferLike>();
  /** ArrayBuffers in a free list: a second give() of the same segment must not hand it out twice. */
  private readonly resting = new WeakSet<ArrayBufferLike>();
  private retainedBytes = 0;
  private lent = 0;

  constructor(private readonly retainBytes: number) {}

  /** A Buffer of exactly `bytes` (> 0) bytes over a segment of this pool; its contents are stale. */
  take(bytes: number): Buffer {
    this.lent++;
    const size = segmentClassOf(bytes);
    const list = this.free.get(size);
    let memory = list !== undefined && list.length > 0 ? (list.pop() as ArrayBuffer) : undefined;
    if (memory !== undefined) {
      this.resting.delete(memory);
      this.retainedBytes -= size;
    } else {
      memory = new ArrayBuffer(size);
      this.made.add(memory);
    }
    return Buffer.from(memory, 0, bytes);
  }

  /**
   * Gives back the segment under `data` (a Buffer take() returned, or any view of it); nothing may
   * read or write it afterwards. Data this pool did not make, or already has, is ignored.
   */
  give(data: Uint8Array): void {
    const memory = data.buffer;
    if (!this.made.has(memory) || this.resting.has(memory)) return;
    this.lent--;
    const size = memory.byteLength;
    if (this.retainedBytes + size > this.retainBytes) return;
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    list.push(memory as ArrayBuffer);
    this.resting.add(memory);
    this.retainedBytes += size;
  }

  /** The segment under `data` will not come back (something may still write it): counted as returned, left to the collector. */
  forget(data: Uint8Array): void {
    if (this.made.has(data.buffer) && !this.resting.has(data.buffer)) this.lent--;
  }

  /** True when `data` lies in a segment of this pool. */
  owns(data: Uint8Array): boolean {
    return this.made.has(data.buffer);
  }

  /** Bytes of free segments kept for the next payloads. */
  get retained(): number {
    return this.retainedBytes;
  }

  /** Segments taken and neither given back nor forgotten: what release accounting is checked by. */
  get outstanding(): number {
    return this.lent;
  }
}

export function segmentClassOf(bytes: number): number {
  return sizeClassOf(bytes, MIN_SEGMENT_CLASS_BYTES);
}

/**
 * The smallest power of two that holds `bytes`, at least `minimum` (a power of two). Asked for
 * every pooled payload: clz32 instead of Math.log2 and a power (~1 % of a forwarding node's time
 * in a 4 KiB read, perf), which only sizes past 2 GiB still need.
 */
export function sizeClassOf(bytes: number, minimum: number): number {
  if (bytes <= minimum) return minimum;
  if (bytes <= 0x8000_0000) return 2 ** (32 - Math.clz32(bytes - 1));
  return 2 ** Math.ceil(Math.log2(bytes));
}
