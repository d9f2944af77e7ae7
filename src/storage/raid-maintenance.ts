// Whole-array passes: resync after an unclean stop, rebuild of a member, and scrub.
//
// Each pass walks stripes in order and holds one stripe's exclusive lock at a time, so the array
// keeps serving: I/O on other stripes goes on, and I/O on the stripe being worked on waits for
// one stripe's worth of work.
import { ChecksumTable } from './checksum-table.js';
import { ZERO_BLOCK_CRC } from './crc.js';
import { BLOCK_BYTES, parityMemberOf, stripeCount, stripeDataBytes } from './layout.js';
import { FileMember, type MemberDevice } from './member.js';
import type { Slot } from './member-set.js';
import { computeParity } from './parity.js';
import type { RaidArray } from './raid-array.js';
import { computeMemberLayout } from './superblock.js';

export type ProgressCallback = (doneBytes: number, totalBytes: number) => void;

/**
 * Rebuild progress is written to the superblock this often, for `status` after a restart. Assembly does
 * not resume from it: a member recorded as rebuilding is failed and rebuilt from the start.
 */
const REBUILD_CHECKPOINT_BYTES = 64 * 1024 * 1024;

/** Mirror sets of a stripe's chunks: raid1 one set of all members, raid10 the pairs, raid5 none. */
function mirrorSets(array: RaidArray): number[][] {
  const { level, memberCount } = array.geometry;
  if (level === 'raid1') return [[...Array(memberCount).keys()]];
  if (level === 'raid10') return [...Array(memberCount / 2).keys()].map((pair) => [2 * pair, 2 * pair + 1]);
  return [];
}

function stripesOfRegion(array: RaidArray, region: number): { first: number; last: number } {
  const { bitmapRegionBytes } = array.members.identity;
  const { chunkBytes } = array.geometry;
  const first = Math.floor((region * bitmapRegionBytes) / chunkBytes);
  const last = Math.min(stripeCount(array.geometry), Math.ceil(((region + 1) * bitmapRegionBytes) / chunkBytes)) - 1;
  return { first, last };
}

/**
 * After a crash, a dirty region may hold a stripe whose data and parity (or mirrors, or checksums)
 * were caught mid-update. None of that was acknowledged as durable, so either version is right; what
 * matters is that they agree. Data is taken as the truth: parity and checksums are recomputed from it
 * (mirrors are copied from the first member). Resolves once every region is resynced and its bit
 * cleared; the array serves meanwhile (RaidArray.resyncBehindIo).
 */
export async function resyncRegions(array: RaidArray, regions: number[], onProgress: (doneBytes: number, totalBytes: number) => void = () => undefined): Promise<void> {
  await array.resyncBehindIo(regions, onProgress);
}

/** The stripes of `regions`, in order, and the bytes of array data they hold. */
export function stripesOfRegions(array: RaidArray, regions: readonly number[]): number[] {
  const stripes: number[] = [];
  for (const region of regions) {
    const { first, last } = stripesOfRegion(array, region);
    for (let stripe = first; stripe <= last; stripe++) stripes.push(stripe);
  }
  return stripes;
}

/**
 * One pass of a resync behind I/O: stripe by stripe in order, each under its exclusive lock, those
 * I/O did not resync first; then a sync and the regions' bits cleared (a region written meanwhile
 * keeps its bit for the array's own quiet-time rule). Stops between stripes when the array stops.
 */
export async function resyncPass(array: RaidArray, behind: ResyncBehind, regions: readonly number[], onProgress: (doneBytes: number, totalBytes: number) => void): Promise<void> {
  const stripeBytes = stripeDataBytes(array.geometry);
  const stripes = [...behind.stripes].sort((a, b) => a - b);
  const totalBytes = stripes.length * stripeBytes;
  let doneBytes = 0;
  onProgress(0, totalBytes);
  for (const stripe of stripes) {
    if (behind.stopping) return;
    await behind.resync(stripe);
    doneBytes += stripeBytes;
    onProgress(doneBytes, totalBytes);
  }
  await array.members.syncAll();
  await array.members.clearRegions([...regions], (region) => !array.writtenSinceOpen(region));
}

/** What a resync running behind I/O has not done yet, and how I/O gets a stripe resynced first. */
export class ResyncBehind {
  readonly stripes: Set<number>;
  /** Set when the array stops: the pass ends after the stripe it is on, the regions stay dirty. */
  stopping = false;

  constructor(
    private readonly array: RaidArray,
    stripes: readonly number[],
    /** The regions the pass covers: their bits stay set until it is done. */
    readonly regions: ReadonlySet<number>,
  ) {
    this.stripes = new Set(stripes);
  }

  /** Resyncs `stripe` unless that is done (by the pass, or by I/O that came first). */
  async resync(stripe: number): Promise<void> {
    if (!this.stripes.has(stripe)) return;
    await this.array.locks.withExclusive(stripe, async () => {
      if (!this.stripes.has(stripe)) return;
      await resyncStripe(this.array, stripe);
      this.stripes.delete(stripe);
    });
  }

  /** Resyncs every stripe of `[first, last]` not done yet. */
  async resyncRange(first: number, last: number): Promise<void> {
    const waits: Array<Promise<void>> = [];
    for (let stripe = first; stripe <= last; stripe++) if (this.stripes.has(stripe)) waits.push(this.resync(stripe));
    await Promise.all(waits);
  }
}

async function resyncStripe(array: RaidArray, stripe: number): Promise<void> {
  const { chunkBytes, memberCount } = array.geometry;
  const memberOffset = stripe * chunkBytes;
  const readable = (member: number): boolean => array.members.readable(member, memberOffset, chunkBytes);
  if (array.geometry.level === 'raid5') {
    const parity = parityMemberOf(array.geometry, stripe);
    const missing = [...Array(memberCount).keys()].filter((member) => !readable(member));
    const chunks = await Promise.all([...Array(memberCount).keys()].map((member) => (readable(member) ? readRaw(array, member, memberOffset, chunkBytes) : null)));
    if (missing.length > 0) {
      // Degraded and unclean: parity is needed to rebuild the missing member, so it is kept; only
      // checksums of what is present are brought in line. This is the raid5 write hole md also has.
      array.deps.logger.error(`stripe ${stripe}: resync while degraded; data of member ${missing.join(',')} may not match`);
      chunks.forEach((chunk, member) => chunk && array.members.recordBlocks(member, memberOffset, chunk));
      return;
    }
    const data = chunks.filter((_, member) => member !== parity) as Buffer[];
    const newParity = Buffer.allocUnsafe(chunkBytes);
    computeParity(data, newParity);
    await array.writeMember(parity, memberOffset, newParity);
    chunks.forEach((chunk, member) => member !== parity && array.members.recordBlocks(member, memberOffset, chunk as Buffer));
    return;
  }
  for (const set of mirrorSets(array)) {
    const source = set.find(readable);
    if (source === undefined) continue;
    const chunk = await readRaw(array, source, memberOffset, chunkBytes);
    array.members.recordBlocks(source, memberOffset, chunk);
    await Promise.all(set.filter((member) => member !== source).map((member) => array.writeMember(member, memberOffset, chunk)));
  }
}

async function readRaw(array: RaidArray, member: number, memberOffset: number, lengthBytes: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(lengthBytes);
  await ((array.members.slots[member] as Slot).device as MemberDevice).read(array.members.identity.dataOffset + memberOffset, buffer);
  return buffer;
}

/** The content member `member` should hold for `stripe`, from the other members. */
async function chunkFromRedundancy(array: RaidArray, stripe: number, member: number): Promise<Buffer> {
  const { chunkBytes } = array.geometry;
  const memberOffset = stripe * chunkBytes;
  if (array.geometry.level === 'raid5') return array.reconstruct(stripe, member, memberOffset, chunkBytes);
  const set = mirrorSets(array).find((candidate) => candidate.includes(member)) as number[];
  for (const other of set) {
    if (other === member || !array.members.readable(other, memberOffset, chunkBytes)) continue;
    const buffer = Buffer.allocUnsafe(chunkBytes);
    const bad = await array.readVerified(other, memberOffset, buffer);
    if (bad !== null && bad.length === 0) return buffer;
  }
  throw new Error(`stripe ${stripe}: no good copy to rebuild member ${member} from`);
}

/** Rebuilds a member in place, stripe by stripe, while the array serves. */
export async function rebuildMember(array: RaidArray, member: number, onProgress?: ProgressCallback): Promise<void> {
  // A rebuild reads stripes as the truth: after a resync, not while stripes may disagree.
  await array.resynced();
  const slot = array.members.slots[member] as Slot;
  if (slot.device === null) throw new Error(`member ${member} has no file to rebuild onto; use replace`);
  if (slot.state === 'active') throw new Error(`member ${member} is active; fail it first to rebuild it`);
  const { chunkBytes, memberDataBytes } = array.geometry;
  slot.checksums ??= ChecksumTable.filledWith(memberDataBytes / BLOCK_BYTES, ZERO_BLOCK_CRC);
  slot.state = 'rebuilding';
  slot.reason = 'rebuilding';
  slot.rebuildPositionBytes = 0;
  await array.members.writeSuperblocks();
  const stripes = stripeCount(array.geometry);
  let checkpoint = 0;
  for (let stripe = 0; stripe < stripes; stripe++) {
    await array.locks.withExclusive(stripe, async () => {
      const chunk = await chunkFromRedundancy(array, stripe, member);
      if (!(await array.writeMember(member, stripe * chunkBytes, chunk))) throw new Error(`member ${member} failed during its rebuild`);
      slot.rebuildPositionBytes = (stripe + 1) * chunkBytes;
    });
    onProgress?.(slot.rebuildPositionBytes, memberDataBytes);
    if (slot.rebuildPositionBytes - checkpoint >= REBUILD_CHECKPOINT_BYTES) {
      checkpoint = slot.rebuildPositionBytes;
      await array.members.writeSuperblocks();
    }
  }
  // The rebuilt member's checksums must be on disk before it counts as active: its regions are
  // not marked dirty, so no resync would recompute them after a crash.
  await array.members.flushChecksumPages();
  await (slot.device as MemberDevice).sync();
  slot.state = 'active';
  slot.reason = '';
  await array.members.writeSuperblocks();
  array.deps.logger.info(`raid member ${member} rebuilt`);
}

/** Puts a new file in place of a member and rebuilds onto it. */
export async function replaceMember(array: RaidArray, member: number, newPath: string, onProgress?: ProgressCallback): Promise<void> {
  const slot = array.members.slots[member] as Slot;
  if (slot.state === 'active') await array.members.markFailed(member, 'replaced by administrator');
  const identity = array.members.identity;
  const layout = computeMemberLayout({ memberDataBytes: identity.memberDataBytes, blockBytes: BLOCK_BYTES, bitmapRegionBytes: identity.bitmapRegionBytes, bitmapSlotCount: identity.bitmapSlotCount });
  const device = await FileMember.create(newPath, layout.fileBytes);
  const checksums = ChecksumTable.filledWith(identity.memberDataBytes / BLOCK_BYTES, ZERO_BLOCK_CRC);
  await device.write(identity.checksumOffset, checksums.encode());
  await slot.device?.close().catch(() => undefined);
  slot.device = device;
  slot.path = newPath;
  slot.checksums = checksums;
  await rebuildMember(array, member, onProgress);
}

export interface ScrubReport {
  stripes: number;
  blocksChecked: number;
  checksumRepairs: number;
  parityRepairs: number;
  unrecoverableBlocks: number;
}

/** Reads every block of every member, repairs checksum failures from redundancy, fixes parity. */
export async function scrubArray(array: RaidArray, onProgress?: ProgressCallback): Promise<ScrubReport> {
  // Stripes a resync has not reached yet would count as parity errors: scrub after it.
  await array.resynced();
  const report: ScrubReport = { stripes: 0, blocksChecked: 0, checksumRepairs: 0, parityRepairs: 0, unrecoverableBlocks: 0 };
  const stripes = stripeCount(array.geometry);
  const { chunkBytes } = array.geometry;
  for (let stripe = 0; stripe < stripes; stripe++) {
    await array.locks.withExclusive(stripe, () => scrubStripe(array, stripe, report));
    report.stripes++;
    onProgress?.((stripe + 1) * chunkBytes, stripes * chunkBytes);
  }
  await array.members.flushChecksumPages();
  await array.members.syncAll();
  return report;
}

async function scrubStripe(array: RaidArray, stripe: number, report: ScrubReport): Promise<void> {
  const { chunkBytes, memberCount } = array.geometry;
  const memberOffset = stripe * chunkBytes;
  const blocks = chunkBytes / BLOCK_BYTES;
  const chunks: Array<Buffer | null> = [];
  const bad: number[][] = [];
  for (let member = 0; member < memberCount; member++) {
    if (!array.members.readable(member, memberOffset, chunkBytes)) {
      chunks.push(null);
      bad.push([]);
      continue;
    }
    const buffer = Buffer.allocUnsafe(chunkBytes);
    const result = await array.readVerified(member, memberOffset, buffer, true);
    chunks.push(result === null ? null : buffer);
    bad.push(result ?? []);
    if (result !== null) report.blocksChecked += blocks;
  }
  if (array.geometry.level === 'raid5') await scrubParityStripe(array, stripe, chunks, bad, report);
  else await scrubMirrorStripe(array, memberOffset, chunks, bad, report);
}

async function scrubMirrorStripe(array: RaidArray, memberOffset: number, chunks: Array<Buffer | null>, bad: number[][], report: ScrubReport): Promise<void> {
  for (const set of mirrorSets(array)) {
    for (const member of set) {
      for (const block of bad[member] ?? []) {
        const good = set.find((other) => other !== member && chunks[other] && !(bad[other] ?? []).includes(block));
        if (good === undefined) {
          report.unrecoverableBlocks++;
          continue;
        }
        const source = (chunks[good] as Buffer).subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES);
        await array.rewriteBlock(member, memberOffset + block * BLOCK_BYTES, source);
        report.checksumRepairs++;
      }
    }
  }
}

async function scrubParityStripe(array: RaidArray, stripe: number, chunks: Array<Buffer | null>, bad: number[][], report: ScrubReport): Promise<void> {
  const { chunkBytes, memberCount } = array.geometry;
  const memberOffset = stripe * chunkBytes;
  const parity = parityMemberOf(array.geometry, stripe);
  const blocks = chunkBytes / BLOCK_BYTES;
  for (let block = 0; block < blocks; block++) {
    const at = block * BLOCK_BYTES;
    const failing = [...Array(memberCount).keys()].filter((member) => chunks[member] === null || (bad[member] ?? []).includes(block));
    if (failing.length > 1) {
      report.unrecoverableBlocks++;
      continue;
    }
    const slice = (member: number): Buffer => (chunks[member] as Buffer).subarray(at, at + BLOCK_BYTES);
    if (failing.length === 1) {
      const broken = failing[0] as number;
      if (chunks[broken] === null) continue; // member unavailable: a rebuild's job, not scrub's
      const rebuilt = Buffer.allocUnsafe(BLOCK_BYTES);
      computeParity([...Array(memberCount).keys()].filter((member) => member !== broken).map(slice), rebuilt);
      rebuilt.copy(chunks[broken] as Buffer, at);
      await array.rewriteBlock(broken, memberOffset + at, rebuilt);
      report.checksumRepairs++;
      continue;
    }
    const expected = Buffer.allocUnsafe(BLOCK_BYTES);
    computeParity([...Array(memberCount).keys()].filter((member) => member !== parity).map(slice), expected);
    if (!expected.equals(slice(parity))) {
      // Every block passed its checksum, so the data is right and the parity is stale.
      await array.writeMember(parity, memberOffset + at, expected);
      report.parityRepairs++;
    }
  }
}
