// The write-intent bitmap of one member, as kept by one node (md-cluster style: each node owns one
// slot of the member's bitmap area, so nodes never write each other's bits).
//
// The member's data area is cut into regions of `regionBytes`. Before a write reaches a member, the
// bits of its regions are set and the page holding them is written; once every member has the data
// the bits may be cleared lazily. After a crash or a member failure, only regions whose bit is set in
// some slot need resynchronising, instead of the whole member.
//
// Bit order: region i is bit (i mod 8), counting from the least significant bit, of byte floor(i / 8)
// of the slot. So region 0 is 0x01 of byte 0, region 9 is 0x02 of byte 1. A slot is a whole number of
// 4096-byte pages so that one region's bit can be persisted with one aligned page write.
import assert from 'node:assert/strict';
import { FormatError } from './crc.js';

export const BITMAP_PAGE_BYTES = 4096;
const REGIONS_PER_PAGE = BITMAP_PAGE_BYTES * 8;

export class WriteIntentBitmapError extends FormatError {
  override name = 'WriteIntentBitmapError';
}

/** Bytes of one node's slot: one bit per region, rounded up to whole pages. */
export function bitmapSlotBytesFor(regionBytes: number, memberDataBytes: number): number {
  const regionCount = Math.ceil(memberDataBytes / regionBytes);
  return Math.max(1, Math.ceil(regionCount / REGIONS_PER_PAGE)) * BITMAP_PAGE_BYTES;
}

export class WriteIntentBitmap {
  readonly regionCount: number;
  readonly slotBytes: number;
  private readonly bits: Buffer;
  /** Maintained by set/clear so that "is anything dirty?" costs nothing. */
  private dirty = 0;

  constructor(
    readonly regionBytes: number,
    readonly memberDataBytes: number,
  ) {
    assert(Number.isSafeInteger(regionBytes) && regionBytes > 0, 'region bytes must be a positive integer');
    assert(Number.isSafeInteger(memberDataBytes) && memberDataBytes >= 0, 'member data bytes must be an integer');
    this.regionCount = Math.ceil(memberDataBytes / regionBytes);
    this.slotBytes = bitmapSlotBytesFor(regionBytes, memberDataBytes);
    this.bits = Buffer.alloc(this.slotBytes);
  }

  get dirtyCount(): number {
    return this.dirty;
  }

  /** Regions touched by a write of `lengthBytes` at `memberOffset` of the data area. */
  regionsOf(memberOffset: number, lengthBytes: number): number[] {
    assert(memberOffset >= 0 && lengthBytes >= 0 && memberOffset + lengthBytes <= this.memberDataBytes, 'range outside the data area');
    if (lengthBytes === 0) return [];
    const first = Math.floor(memberOffset / this.regionBytes);
    const last = Math.floor((memberOffset + lengthBytes - 1) / this.regionBytes);
    const regions: number[] = [];
    for (let region = first; region <= last; region++) regions.push(region);
    return regions;
  }

  isSet(region: number): boolean {
    this.checkRegion(region);
    return (this.bits[region >>> 3] & (1 << (region & 7))) !== 0;
  }

  /** Returns whether the bit changed: only then must its page be written before the data. */
  set(region: number): boolean {
    if (this.isSet(region)) return false;
    this.bits[region >>> 3] |= 1 << (region & 7);
    this.dirty++;
    return true;
  }

  clear(region: number): boolean {
    if (!this.isSet(region)) return false;
    this.bits[region >>> 3] &= ~(1 << (region & 7));
    this.dirty--;
    return true;
  }

  /** Set regions in ascending order; skips clean bytes, so a mostly clean bitmap scans quickly. */
  dirtyRegions(): number[] {
    const regions: number[] = [];
    for (let index = 0; index < this.bits.length && regions.length < this.dirty; index++) {
      const byte = this.bits[index];
      if (byte === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) regions.push(index * 8 + bit);
    }
    return regions;
  }

  /** Which page of the slot holds the bit of `region`. */
  pageOf(region: number): number {
    this.checkRegion(region);
    return Math.floor(region / REGIONS_PER_PAGE);
  }

  /** A copy of one page, to be written at slot offset page * 4096. */
  encodePage(page: number): Buffer {
    assert(Number.isInteger(page) && page >= 0 && page < this.slotBytes / BITMAP_PAGE_BYTES, `no page ${page}`);
    return Buffer.from(this.bits.subarray(page * BITMAP_PAGE_BYTES, (page + 1) * BITMAP_PAGE_BYTES));
  }

  encodeSlot(): Buffer {
    return Buffer.from(this.bits);
  }

  /**
   * Rebuilds a bitmap from a slot read from disk. A bit past the last region cannot have been
   * written by us, so the slot is damaged and the caller should resynchronise the whole member.
   */
  static decodeSlot(buffer: Buffer, regionBytes: number, memberDataBytes: number): WriteIntentBitmap {
    const bitmap = new WriteIntentBitmap(regionBytes, memberDataBytes);
    if (buffer.length !== bitmap.slotBytes) {
      throw new WriteIntentBitmapError('bad-value', `bitmap slot is ${buffer.length} bytes, expected ${bitmap.slotBytes}`);
    }
    buffer.copy(bitmap.bits);
    let dirty = 0;
    for (const byte of bitmap.bits) dirty += popCount(byte);
    bitmap.dirty = dirty;
    const beyond = bitmap.dirtyRegions().find((region) => region >= bitmap.regionCount);
    if (beyond !== undefined) {
      throw new WriteIntentBitmapError('bad-value', `bitmap bit ${beyond} set past the last region ${bitmap.regionCount - 1}`);
    }
    return bitmap;
  }

  private checkRegion(region: number): void {
    assert(Number.isInteger(region) && region >= 0 && region < this.regionCount, `no region ${region}`);
  }
}

function popCount(byte: number): number {
  let count = 0;
  for (let value = byte; value !== 0; value &= value - 1) count++;
  return count;
}
