// raid5 parity: the parity chunk is the XOR of a stripe's data chunks. XOR is its own inverse, so
// the XOR of any N-1 chunks of a stripe (data or parity) is the missing one, and a small write can
// update parity from the old parity, old data and new data without reading the rest of the stripe
// (P' = P ^ D ^ D'). Everything here is pure and works in place on caller buffers.
//
// Speed (Node 20.20, AMD EPYC, 2 GiB XORed per variant, each in its own process, best of 3):
//   byte loop                     ~0.9 GB/s
//   Uint32Array views             ~2.7 GB/s
//   Uint32Array, unrolled x4      ~5.3 GB/s
//   BigUint64Array views          ~5.4 GB/s   <- kept: fastest and still a one-line loop
// As shipped: xorInto 6.2 GB/s on 4 KiB, 7.2 GB/s on 1 MiB; misaligned views take the byte loop.
// isZero compares against a shared zero buffer (native memcmp): ~25 GB/s on 4 KiB, ~60 GB/s on
// 64 KiB, versus ~6.5 GB/s for a BigUint64Array scan.

import assert from 'node:assert/strict';

const WORD_BYTES = 8;
/** Compared against in pieces by isZero; never written. */
const ZEROS = Buffer.alloc(64 * 1024);

/** target ^= source. */
export function xorInto(target: Buffer, source: Buffer): void {
  if (!(target.length === source.length)) assert.fail(`xor of unequal lengths ${target.length} and ${source.length}`);
  let done = 0;
  // BigUint64Array needs 8-byte aligned views; any tail shorter than a word goes byte by byte.
  if (target.byteOffset % WORD_BYTES === 0 && source.byteOffset % WORD_BYTES === 0) {
    const wordCount = Math.floor(target.length / WORD_BYTES);
    const targetWords = new BigUint64Array(target.buffer, target.byteOffset, wordCount);
    const sourceWords = new BigUint64Array(source.buffer, source.byteOffset, wordCount);
    for (let i = 0; i < wordCount; i++) targetWords[i] ^= sourceWords[i];
    done = wordCount * WORD_BYTES;
  }
  for (let i = done; i < target.length; i++) target[i] ^= source[i];
}

/** into = XOR of all chunks. `into` may be chunks[0] but no later chunk (it is overwritten first). */
export function computeParity(chunks: readonly Buffer[], into: Buffer): void {
  assert(chunks.length >= 1, 'parity of no chunks');
  assert(!chunks.includes(into, 1), 'into aliases a source chunk that is read after it is overwritten');
  for (const chunk of chunks) if (!(chunk.length === into.length)) assert.fail(`chunk of ${chunk.length} bytes, expected ${into.length}`);
  if (chunks[0] !== into) into.set(chunks[0]);
  for (let i = 1; i < chunks.length; i++) xorInto(into, chunks[i]);
}

/** The missing chunk of a raid5 stripe: XOR of every surviving chunk, data and parity alike. */
export function reconstructMissing(others: readonly Buffer[], into: Buffer): void {
  if (!(others.length >= 2)) assert.fail(`a raid5 stripe has at least 2 surviving chunks, got ${others.length}`);
  computeParity(others, into);
}

/** Read-modify-write: into = oldParity ^ oldData ^ newData. `into` may be oldParity (in place). */
export function updateParity(oldParity: Buffer, oldData: Buffer, newData: Buffer, into: Buffer): void {
  computeParity([oldParity, oldData, newData], into);
}

/** True when every byte is zero. */
export function isZero(buffer: Buffer): boolean {
  for (let offset = 0; offset < buffer.length; offset += ZEROS.length) {
    const pieceBytes = Math.min(ZEROS.length, buffer.length - offset);
    if (!buffer.subarray(offset, offset + pieceBytes).equals(ZEROS.subarray(0, pieceBytes))) return false;
  }
  return true;
}
