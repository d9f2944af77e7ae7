// The frame pool: one buffer allocated (and touched) when the node starts, cut into frames that
// are handed out as views, never copied. Pages of an allocation are 4 KiB to 1 MiB (a power of two,
// chosen per allocation), so the pool is a binary buddy allocator over 4 KiB frames:
//
//   order 0 = 4 KiB … order 8 = 1 MiB.  allocate(order): take a free block of that order, or split
//   the smallest larger one in halves until it fits.  free(block): while its buddy (offset XOR size)
//   is free at the same order, merge the two.  A pool of whole 1 MiB blocks always merges back.
//
// Why buddy and not one frame size: a node holds pages of several allocations with different page
// sizes (its own and its partners' mirrors) in one pool, and buddy keeps every page contiguous, so a
// page is one Buffer view and one I/O, with bounded, self-healing fragmentation.
import { InputError, BLOCK_BYTES, MAX_PAGE_BYTES } from '../core/index.js';
import assert from 'node:assert/strict';


/** A frame is one block: the smallest page. */
export const FRAME_BYTES = BLOCK_BYTES;
export { MAX_PAGE_BYTES };
const MAX_ORDER = Math.log2(MAX_PAGE_BYTES / FRAME_BYTES);

export class FramePoolError extends InputError {
  override name = 'FramePoolError';
}

export class FramePool {
  /** The pool itself: every frame is a view of this buffer. */
  readonly memory: Buffer;
  private readonly freeLists: Array<Set<number>> = Array.from({ length: MAX_ORDER + 1 }, () => new Set<number>());
  /** Offset → order of every block handed out, so free() needs only the offset and catches double frees. */
  private readonly used = new Map<number, number>();
  private freeBytesNow: number;

  constructor(readonly poolBytes: number) {
    if (!Number.isSafeInteger(poolBytes) || poolBytes <= 0 || poolBytes % MAX_PAGE_BYTES !== 0) {
      throw new FramePoolError(`memory pool of ${poolBytes} bytes must be a positive multiple of ${MAX_PAGE_BYTES}`);
    }
    // Written, not just allocated: the kernel maps every page now, not on the first write of a
    // frame. Buffer.alloc(n, 0) would not do it (a zero fill is skipped for zero-initialised
    // memory), and the first-touch faults then cost more than the copies on the write path.
    this.memory = Buffer.allocUnsafe(poolBytes).fill(0);
    for (let offset = 0; offset < poolBytes; offset += MAX_PAGE_BYTES) (this.freeLists[MAX_ORDER] as Set<number>).add(offset);
    this.freeBytesNow = poolBytes;
  }

  get freeBytes(): number {
    return this.freeBytesNow;
  }

  /** A block of `bytes` (a power of two from 4 KiB to 1 MiB), or null when the pool cannot hold it now. */
  allocate(bytes: number): number | null {
    const order = orderOf(bytes);
    let found = order;
    while (found <= MAX_ORDER && (this.freeLists[found] as Set<number>).size === 0) found++;
    if (found > MAX_ORDER) return null;
    const offset = (this.freeLists[found] as Set<number>).values().next().value as number;
    (this.freeLists[found] as Set<number>).delete(offset);
    // Split down to the wanted order; the upper halves become free buddies.
    for (let split = found; split > order; split--) (this.freeLists[split - 1] as Set<number>).add(offset + (FRAME_BYTES << (split - 1)));
    this.used.set(offset, order);
    this.freeBytesNow -= bytes;
    return offset;
  }

  /** The frame's bytes, as a view of the pool. */
  view(offset: number): Buffer {
    const order = this.used.get(offset);
    assert(order !== undefined, `frame ${offset} is not allocated`);
    return this.memory.subarray(offset, offset + (FRAME_BYTES << order));
  }

  free(offset: number): void {
    let order = this.used.get(offset);
    assert(order !== undefined, `frame ${offset} is not allocated (double free?)`);
    this.used.delete(offset);
    this.freeBytesNow += FRAME_BYTES << order;
    let block = offset;
    while (order < MAX_ORDER) {
      const buddy = block ^ (FRAME_BYTES << order);
      const freeAtOrder = this.freeLists[order] as Set<number>;
      if (!freeAtOrder.has(buddy)) break;
      freeAtOrder.delete(buddy);
      block = Math.min(block, buddy);
      order++;
    }
    (this.freeLists[order] as Set<number>).add(block);
  }

  /** The largest block that could be allocated right now (0 when full). */
  largestFreeBytes(): number {
    for (let order = MAX_ORDER; order >= 0; order--) if ((this.freeLists[order] as Set<number>).size > 0) return FRAME_BYTES << order;
    return 0;
  }
}

function orderOf(bytes: number): number {
  const order = Math.log2(bytes / FRAME_BYTES);
  if (!Number.isInteger(order) || order < 0 || order > MAX_ORDER) {
    throw new FramePoolError(`page size ${bytes} is not a power of two from ${FRAME_BYTES} to ${MAX_PAGE_BYTES}`);
  }
  return order;
}
