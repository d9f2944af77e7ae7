// RAID geometry: where each byte of the array lives on the members. Pure arithmetic, no I/O.
//
// The array's address space is cut into stripes; a stripe is one chunk at the same member offset
// (stripe * chunkBytes) on every member. raid1 copies the stripe's one data chunk to every member;
// raid10 stripes data chunk d over the mirror pair [2d, 2d+1]; raid5 keeps N-1 data chunks and
// their XOR parity, rotating the parity member left-symmetric like Linux md's default layout.
// For 4 members:
//
//               member 0   member 1   member 2   member 3
//   stripe 0       D0         D1         D2         P        parity = 3 - (stripe mod 4)
//   stripe 1       D1         D2         P          D0       D0 sits just after the parity member
//   stripe 2       D2         P          D0         D1       and the data chunks follow, wrapping
//   stripe 3       P          D0         D1         D2
//
// Why left-symmetric: it is md's default, so md's documentation, diagrams and recovery reasoning
// carry over unchanged; parity rotates so no member is a write hotspot; and the chunk after D(N-2)
// of one stripe is D0 of the next on the following member, so a sequential read visits every
// member in turn instead of skipping the parity member, spreading reads over all spindles.

import assert from 'node:assert/strict';

export type RaidLevel = 'raid1' | 'raid10' | 'raid5';

/** The RAID's I/O and checksum granularity. */
import { BLOCK_BYTES } from '../core/index.js';

export { BLOCK_BYTES };
/** Members per array; bounds per-stripe fan-out and the parity work of one stripe write. */
export const MEMBER_COUNT_MAX = 32;
/** Largest chunk; a raid5 read-modify-write holds a few chunks in memory per stripe. */
export const CHUNK_BYTES_MAX = 16 * 1024 * 1024;

export interface Geometry {
  level: RaidLevel;
  memberCount: number;
  chunkBytes: number;
  /** Size of each member's data area (after its superblock and bitmap); a whole number of chunks. */
  memberDataBytes: number;
}

/** One piece of an array range that lies inside a single chunk. */
export interface ChunkSpan {
  stripe: number;
  dataIndex: number;
  /** Where this span starts in the array's address space. */
  arrayOffset: number;
  /** Offset inside each member's data area, the same on every member holding it. */
  memberOffset: number;
  offsetInChunk: number;
  lengthBytes: number;
  /** Members holding a copy of this data chunk. */
  members: number[];
  /** raid5: the stripe's parity member; otherwise null. */
  parityMember: number | null;
}

const MEMBER_COUNT_MIN: Record<RaidLevel, number> = { raid1: 2, raid10: 4, raid5: 3 };

/** Returns null when the geometry is usable, else a message naming the bad field. */
export function validateGeometry(g: Geometry): string | null {
  const { level, memberCount, chunkBytes, memberDataBytes } = g;
  if (!Object.hasOwn(MEMBER_COUNT_MIN, level)) return `unknown RAID level '${String(level)}' (known: raid1, raid10, raid5)`;
  const memberCountMin = MEMBER_COUNT_MIN[level];
  if (!Number.isInteger(memberCount) || memberCount < memberCountMin) {
    return `${level} needs at least ${memberCountMin} members, got ${memberCount}`;
  }
  if (memberCount > MEMBER_COUNT_MAX) return `memberCount ${memberCount} exceeds the limit of ${MEMBER_COUNT_MAX}`;
  if (level === 'raid10' && memberCount % 2 !== 0) return `raid10 needs an even member count (mirror pairs), got ${memberCount}`;
  if (!Number.isInteger(chunkBytes) || chunkBytes < BLOCK_BYTES || chunkBytes > CHUNK_BYTES_MAX || !isPowerOfTwo(chunkBytes)) {
    return `chunkBytes must be a power of two from ${BLOCK_BYTES} to ${CHUNK_BYTES_MAX}, got ${chunkBytes}`;
  }
  if (!Number.isSafeInteger(memberDataBytes) || memberDataBytes <= 0 || memberDataBytes % chunkBytes !== 0) {
    return `memberDataBytes must be a positive multiple of chunkBytes (${chunkBytes}), got ${memberDataBytes}`;
  }
  if (!Number.isSafeInteger(memberDataBytes * memberCount)) return `memberDataBytes ${memberDataBytes} is too large to address`;
  return null;
}

export function dataChunksPerStripe(g: Geometry): number {
  switch (g.level) {
    case 'raid1':
      return 1;
    case 'raid10':
      return g.memberCount / 2;
    case 'raid5':
      return g.memberCount - 1;
  }
}

export function stripeDataBytes(g: Geometry): number {
  return g.chunkBytes * dataChunksPerStripe(g);
}

export function stripeCount(g: Geometry): number {
  return g.memberDataBytes / g.chunkBytes;
}

/** Usable bytes of the array. */
export function arrayDataBytes(g: Geometry): number {
  return stripeCount(g) * stripeDataBytes(g);
}

/** raid5 only: left-symmetric, the parity member walks down from the last member. */
export function parityMemberOf(g: Geometry, stripe: number): number {
  if (g.level !== 'raid5') assert.fail(`${g.level} has no parity`);
  assertStripe(g, stripe);
  return g.memberCount - 1 - (stripe % g.memberCount);
}

/** Members holding copies of data chunk `dataIndex` of `stripe`. */
export function dataMembersOf(g: Geometry, stripe: number, dataIndex: number): number[] {
  assertStripe(g, stripe);
  if (!(Number.isInteger(dataIndex) && dataIndex >= 0 && dataIndex < dataChunksPerStripe(g))) assert.fail(`no data chunk ${dataIndex} in a ${g.level} stripe`);
  switch (g.level) {
    case 'raid1':
      return Array.from({ length: g.memberCount }, (_, member) => member);
    case 'raid10':
      return [2 * dataIndex, 2 * dataIndex + 1];
    case 'raid5':
      return [(parityMemberOf(g, stripe) + 1 + dataIndex) % g.memberCount];
  }
}

/** Which data chunk of `stripe` `member` holds; null for the raid5 parity member. */
export function dataIndexOf(g: Geometry, stripe: number, member: number): number | null {
  assertStripe(g, stripe);
  if (!(Number.isInteger(member) && member >= 0 && member < g.memberCount)) assert.fail(`no member ${member}`);
  switch (g.level) {
    case 'raid1':
      return 0;
    case 'raid10':
      return Math.floor(member / 2);
    case 'raid5': {
      const parityMember = parityMemberOf(g, stripe);
      if (member === parityMember) return null;
      return (member - parityMember - 1 + g.memberCount) % g.memberCount;
    }
  }
}

/** Splits an array range into per-chunk spans, in address order. Throws RangeError outside the array. */
export function mapRange(g: Geometry, arrayOffset: number, lengthBytes: number): ChunkSpan[] {
  checkRange(g, arrayOffset, lengthBytes);
  const spans: ChunkSpan[] = [];
  const stripeBytes = stripeDataBytes(g);
  const endOffset = arrayOffset + lengthBytes;
  for (let offset = arrayOffset; offset < endOffset; ) {
    const stripe = Math.floor(offset / stripeBytes);
    const offsetInStripe = offset - stripe * stripeBytes;
    const dataIndex = Math.floor(offsetInStripe / g.chunkBytes);
    const offsetInChunk = offsetInStripe - dataIndex * g.chunkBytes;
    const spanBytes = Math.min(g.chunkBytes - offsetInChunk, endOffset - offset);
    spans.push({
      stripe,
      dataIndex,
      arrayOffset: offset,
      memberOffset: stripe * g.chunkBytes + offsetInChunk,
      offsetInChunk,
      lengthBytes: spanBytes,
      members: dataMembersOf(g, stripe, dataIndex),
      parityMember: g.level === 'raid5' ? parityMemberOf(g, stripe) : null,
    });
    offset += spanBytes;
  }
  return spans;
}

/** First and last stripe a range touches; an empty range gives last = first - 1. */
export function stripesOf(g: Geometry, arrayOffset: number, lengthBytes: number): { first: number; last: number } {
  checkRange(g, arrayOffset, lengthBytes);
  const stripeBytes = stripeDataBytes(g);
  const first = Math.floor(arrayOffset / stripeBytes);
  if (lengthBytes === 0) return { first, last: first - 1 };
  return { first, last: Math.floor((arrayOffset + lengthBytes - 1) / stripeBytes) };
}

function checkRange(g: Geometry, arrayOffset: number, lengthBytes: number): void {
  const limitBytes = arrayDataBytes(g);
  if (!Number.isSafeInteger(arrayOffset) || !Number.isSafeInteger(lengthBytes) || arrayOffset < 0 || lengthBytes < 0 || arrayOffset + lengthBytes > limitBytes) {
    throw new RangeError(`range ${arrayOffset}+${lengthBytes} is outside the array of ${limitBytes} bytes`);
  }
}

function assertStripe(g: Geometry, stripe: number): void {
  if (!(Number.isInteger(stripe) && stripe >= 0 && stripe < stripeCount(g))) assert.fail(`no stripe ${stripe}`);
}

function isPowerOfTwo(value: number): boolean {
  return value > 0 && (value & (value - 1)) === 0;
}
