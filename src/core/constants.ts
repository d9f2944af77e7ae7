// The limits several layers share, defined once, with the relations between them asserted when
// this module loads (so a change that breaks one stops every process at its first line, not a
// request at its thousandth). Each layer's own limits stay in that layer's constants.
import assert from 'node:assert';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * The block: the unit of the array's checksums and write-intent, of volume sizes, of the frame
 * pool, and the smallest memory-manager page. Everything below the NBD layer moves whole blocks.
 */
export const BLOCK_BYTES = 4 * KiB;

/** Memory-manager page sizes (a volume's pageSize): powers of two from one block to 1 MiB. */
export const MIN_PAGE_BYTES = BLOCK_BYTES;
export const MAX_PAGE_BYTES = 1 * MiB;

/** Volume sizes are whole blocks, so every client's block size divides them. */
export const VOLUME_ALIGNMENT_BYTES = BLOCK_BYTES;

/** The most one write page (a run of consecutive pages) or one forwarded I/O carries. */
export const MAX_RUN_BYTES = MAX_PAGE_BYTES;

/** Largest NBD READ/WRITE payload, advertised as the maximum block size (QEMU sends up to 32 MiB). */
export const MAX_REQUEST_BYTES = 32 * MiB;

/** The block size NBD clients are told to prefer. */
export const PREFERRED_REQUEST_BYTES = BLOCK_BYTES;

const isPowerOfTwo = (value: number): boolean => value > 0 && (value & (value - 1)) === 0;

assert(isPowerOfTwo(BLOCK_BYTES), 'a block is a power of two');
assert(MIN_PAGE_BYTES === BLOCK_BYTES, 'the smallest page is one block: pages are whole blocks');
assert(isPowerOfTwo(MAX_PAGE_BYTES) && MAX_PAGE_BYTES % BLOCK_BYTES === 0, 'the largest page is whole blocks');
assert(MAX_RUN_BYTES >= MAX_PAGE_BYTES, 'a run holds at least one whole page');
assert(VOLUME_ALIGNMENT_BYTES % BLOCK_BYTES === 0, 'volumes are whole blocks');
assert(MAX_REQUEST_BYTES % MAX_RUN_BYTES === 0, 'a request splits into whole runs (forwarded I/O)');
assert(PREFERRED_REQUEST_BYTES === BLOCK_BYTES, 'clients are told the block size the layers below move');
