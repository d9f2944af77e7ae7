// The checksum table of one member: the CRC32C of each 4096-byte block of its data area, stored as
// big-endian u32s in block order. A read whose CRC disagrees is treated as a failed read and served
// from redundancy, which catches silent corruption that a plain mirror or parity would return.
//
// The table lives in memory as a Uint32Array and is persisted page by page: page p holds the 1024
// entries of blocks p*1024 .. p*1024+1023, so updating one block's CRC rewrites one aligned page.
import assert from 'node:assert/strict';
import { ZERO_BLOCK_CRC } from './crc.js';

export const CHECKSUM_PAGE_BYTES = 4096;
const ENTRY_BYTES = 4;
export const CHECKSUMS_PER_PAGE = CHECKSUM_PAGE_BYTES / ENTRY_BYTES;

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
