// The checksum table of one member: the CRC32C of each 4096-byte block of its data area, stored as
// big-endian u32s in block order. A read whose CRC disagrees is treated as a failed read and served
// from redundancy, which catches silent corruption that a plain mirror or parity would return.
//
// The table lives in memory as a Uint32Array and is persisted page by page: page p holds the 1024
// entries of blocks p*1024 .. p*1024+1023, so updating one block's CRC rewrites one aligned page.
//
// One entry value is reserved: ZERO_ENTRY (the CRC of a zero block) means "this block is all
// zeroes", never merely "its CRC is that". A block of other bytes whose CRC happens to equal it
// (1 in 2^32) is stored as ZERO_COLLISION_ENTRY instead. So the table alone says which blocks are
// zeroes, and a read of blocks that are (every block of a fresh array, every never-written page of a
// new volume) needs no I/O: the bytes are known, and what the disk holds there would have to match
// them to pass verification anyway.
import assert from 'node:assert/strict';
import { crc32c } from '@node-rs/crc32';
import { ZERO_BLOCK_CRC } from './crc.js';
import { BLOCK_BYTES } from './layout.js';

export const CHECKSUM_PAGE_BYTES = 4096;
const ENTRY_BYTES = 4;
export const CHECKSUMS_PER_PAGE = CHECKSUM_PAGE_BYTES / ENTRY_BYTES;

/** The entry of an all-zero block, and of every block of a fresh member. */
export const ZERO_ENTRY = ZERO_BLOCK_CRC;
/** The entry of a block that is not all zeroes but has the zero block's CRC. */
export const ZERO_COLLISION_ENTRY = (ZERO_BLOCK_CRC ^ 1) >>> 0;

const ZERO_BLOCK = Buffer.alloc(BLOCK_BYTES);

/** The entry to store for one block's bytes. */
export function entryOf(block: Buffer): number {
  const crc = crc32c(block);
  return crc === ZERO_ENTRY && !block.equals(ZERO_BLOCK) ? ZERO_COLLISION_ENTRY : crc;
}

/** Whether one block's bytes are what `entry` says; a zero entry is checked by comparing, not by CRC. */
export function blockMatches(block: Buffer, entry: number): boolean {
  if (entry === ZERO_ENTRY) return block.equals(ZERO_BLOCK);
  const crc = crc32c(block);
  return crc === entry || (entry === ZERO_COLLISION_ENTRY && crc === ZERO_ENTRY && !block.equals(ZERO_BLOCK));
}

/** Bytes the table of `blockCount` blocks occupies on disk, padded to whole pages. */
export function checksumTableBytesFor(blockCount: number): number {
  return Math.ceil(blockCount / CHECKSUMS_PER_PAGE) * CHECKSUM_PAGE_BYTES;
}

export class ChecksumTable {
  private readonly entries: Uint32Array;

  constructor(readonly blockCount: number) {
    assert(Number.isSafeInteger(blockCount) && blockCount >= 0, 'block count must be a non-negative integer');
    this.entries = new Uint32Array(blockCount);
  }

  /** A fresh member reads as zeroes everywhere, so every entry is the CRC of a zero block. */
  static filledWith(blockCount: number, crc: number = ZERO_BLOCK_CRC): ChecksumTable {
    const table = new ChecksumTable(blockCount);
    table.entries.fill(crc);
    return table;
  }

  /** Reads a table from disk bytes; padding past the last block is ignored. */
  static decode(buffer: Buffer, blockCount: number): ChecksumTable {
    assert(buffer.length >= blockCount * ENTRY_BYTES, `checksum table needs ${blockCount * ENTRY_BYTES} bytes`);
    const table = new ChecksumTable(blockCount);
    for (let block = 0; block < blockCount; block++) table.entries[block] = buffer.readUInt32BE(block * ENTRY_BYTES);
    return table;
  }

  get pageCount(): number {
    return Math.ceil(this.blockCount / CHECKSUMS_PER_PAGE);
  }

  get(block: number): number {
    this.checkBlock(block);
    return this.entries[block];
  }

  set(block: number, crc: number): void {
    this.checkBlock(block);
    this.entries[block] = crc;
  }

  /** Whether blocks first .. first+count-1 are all zeroes by the table (count ≥ 1). */
  allZero(first: number, count: number): boolean {
    this.checkBlock(first);
    this.checkBlock(first + count - 1);
    for (let block = first; block < first + count; block++) if (this.entries[block] !== ZERO_ENTRY) return false;
    return true;
  }

  /** Which page holds the entry of `block`: the page to write after `set`. */
  pageOf(block: number): number {
    this.checkBlock(block);
    return Math.floor(block / CHECKSUMS_PER_PAGE);
  }

  /** One page, to be written at table offset page * 4096; entries past the last block are zero. */
  encodePage(page: number): Buffer {
    assert(Number.isInteger(page) && page >= 0 && page < this.pageCount, `no page ${page}`);
    const out = Buffer.alloc(CHECKSUM_PAGE_BYTES);
    this.writeEntries(out, page * CHECKSUMS_PER_PAGE, Math.min(this.blockCount, (page + 1) * CHECKSUMS_PER_PAGE));
    return out;
  }

  /** The whole table, padded to whole pages. */
  encode(): Buffer {
    const out = Buffer.alloc(checksumTableBytesFor(this.blockCount));
    this.writeEntries(out, 0, this.blockCount);
    return out;
  }

  /** Writes entries first..end-1 big-endian, the first one at the start of `out`. */
  private writeEntries(out: Buffer, first: number, end: number): void {
    for (let block = first; block < end; block++) out.writeUInt32BE(this.entries[block], (block - first) * ENTRY_BYTES);
  }

  private checkBlock(block: number): void {
    assert(Number.isInteger(block) && block >= 0 && block < this.blockCount, `no block ${block}`);
  }
}
