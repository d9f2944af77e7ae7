// Copies made by the simulated network and disks (a socket's write, a member write in flight, a
// member block). A Buffer of 4 KiB or more gets an ArrayBuffer of its own: an allocation outside
// the heap, external-memory accounting and a finalizer for the GC, about 1.5 µs, ten times the copy
// of its bytes. These copies are views into shared zero-filled slabs instead, handed out in order
// and never reused; a slab is freed once no view of it is left.
const SLAB_BYTES = 256 * 1024;
/** Larger copies get a buffer of their own (a slab would mostly hold one of them). */
const LARGEST = 32 * 1024;

let slab = Buffer.alloc(SLAB_BYTES);
let used = 0;

/** `length` zero bytes of their own. */
export function zeroed(length: number): Buffer {
  if (length > LARGEST) return Buffer.alloc(length);
  if (used + length > SLAB_BYTES) {
    slab = Buffer.alloc(SLAB_BYTES);
    used = 0;
  }
  const view = slab.subarray(used, used + length);
  // Views start on 8-byte boundaries, as the buffers they replace do.
  used += (length + 7) & ~7;
  return view;
}

/** A copy of `data` that nothing else shares. */
export function copyOf(data: Buffer): Buffer {
  const copy = zeroed(data.length);
  data.copy(copy);
  return copy;
}
