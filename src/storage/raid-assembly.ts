// Creating an array on new member files, and assembling one from the files it was made of.
//
// Assembly trusts superblocks, md-style: every member carries the array uuid, its own index and an
// event counter bumped on every state change. The member(s) with the highest counter speak for the
// array; a member with a lower counter missed changes (it was away while the others were written)
// and is stale: kept out of reads and writes until rebuilt. A file from another array, or one that
// is not a member at all, is refused with its reason rather than silently ignored.
import { randomUUID } from 'node:crypto';
import { ChecksumTable } from './checksum-table.js';
import { FormatError, ZERO_BLOCK_CRC } from './crc.js';
import { BLOCK_BYTES, validateGeometry, type RaidLevel } from './layout.js';
import { FileMember, type MemberDevice } from './member.js';
import { ArrayFailedError, MemberSet, survives, type ArrayIdentity, type Slot } from './member-set.js';
import { RaidArray, type RaidDependencies } from './raid-array.js';
import { resyncRegions } from './raid-maintenance.js';
import {
  BITMAP_SLOT_COUNT,
  computeMemberLayout,
  DEFAULT_BITMAP_REGION_BYTES,
  newestSuperblock,
  SUPERBLOCK_BYTES,
  type Superblock,
} from './superblock.js';
import { WriteIntentBitmap } from './write-intent-bitmap.js';

export const DEFAULT_CHUNK_BYTES = 64 * 1024;

export class RaidConfigError extends Error {
  override name = 'RaidConfigError';
}

export interface CreateOptions {
  level: RaidLevel;
  memberPaths: string[];
  /** Size of each member's data area. */
  memberDataBytes: number;
  chunkBytes?: number;
  bitmapRegionBytes?: number;
}

/** Creates new member files (never overwriting) and returns the running array. */
export async function createArray(options: CreateOptions, deps: RaidDependencies): Promise<RaidArray> {
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const geometry = { level: options.level, memberCount: options.memberPaths.length, chunkBytes, memberDataBytes: options.memberDataBytes };
  const problem = validateGeometry(geometry);
  if (problem) throw new RaidConfigError(problem);
  const bitmapRegionBytes = options.bitmapRegionBytes ?? DEFAULT_BITMAP_REGION_BYTES;
  const layout = computeMemberLayout({ memberDataBytes: options.memberDataBytes, blockBytes: BLOCK_BYTES, bitmapRegionBytes, bitmapSlotCount: BITMAP_SLOT_COUNT });
  const identity: ArrayIdentity = {
    arrayUuid: randomUUID(),
    level: options.level,
    memberCount: options.memberPaths.length,
    chunkBytes,
    blockBytes: BLOCK_BYTES,
    memberDataBytes: options.memberDataBytes,
    dataOffset: layout.dataOffset,
    bitmapOffset: layout.bitmapOffset,
    bitmapRegionBytes,
    bitmapSlotBytes: layout.bitmapSlotBytes,
    bitmapSlotCount: BITMAP_SLOT_COUNT,
    checksumOffset: layout.checksumOffset,
    checksumBytes: layout.checksumBytes,
    createdAtMs: deps.now(),
  };
  const blockCount = options.memberDataBytes / BLOCK_BYTES;
  const slots: Slot[] = [];
  try {
    for (const [index, path] of options.memberPaths.entries()) {
      const device = await FileMember.create(path, layout.fileBytes);
      const checksums = ChecksumTable.filledWith(blockCount, ZERO_BLOCK_CRC);
      slots.push(newSlot(index, path, device, 'active', checksums));
      await device.write(identity.checksumOffset, checksums.encode());
    }
  } catch (error) {
    await Promise.all(slots.map((slot) => slot.device?.close()));
    throw error;
  }
  const members = new MemberSet(identity, slots, 0, false, deps.logger);
  await members.writeSuperblocks();
  deps.logger.info(`created ${options.level} array ${identity.arrayUuid} over ${slots.length} members, ${chunkBytes} byte chunks`);
  return new RaidArray(members, deps);
}

interface Candidate {
  path: string;
  device: MemberDevice | null;
  superblock: Superblock | null;
  problem: string;
}

/** Opens the member files, checks them against each other, resyncs after an unclean stop. */
export async function assembleArray(paths: string[], deps: RaidDependencies, open: (path: string) => Promise<MemberDevice> = FileMember.open): Promise<RaidArray> {
  const candidates = await Promise.all(paths.map((path) => inspect(path, open)));
  const members = candidates.filter((candidate) => candidate.superblock !== null);
  if (members.length === 0) {
    throw new RaidConfigError(`no RAID member among the files:\n${candidates.map((c) => `  ${c.path}: ${c.problem}`).join('\n')}`);
  }
  const newest = members.reduce((a, b) => ((a.superblock as Superblock).eventCounter >= (b.superblock as Superblock).eventCounter ? a : b));
  const authority = newest.superblock as Superblock;
  for (const candidate of members) {
    const superblock = candidate.superblock as Superblock;
    if (superblock.arrayUuid !== authority.arrayUuid) {
      await closeAll(candidates);
      throw new RaidConfigError(`${candidate.path} belongs to array ${superblock.arrayUuid}, not ${authority.arrayUuid}`);
    }
  }
  for (const candidate of candidates) {
    if (candidate.superblock === null) deps.logger.warn(`${candidate.path} is left out of the array: ${candidate.problem}`);
  }
  const slots = await buildSlots(authority, candidates, deps);
  const usable = slots.map((slot) => slot.state === 'active');
  if (!survives(authority.level, usable)) {
    await closeAll(candidates);
    const down = slots.filter((slot) => slot.state !== 'active').map((slot) => `  member ${slot.index} (${slot.path || 'no file'}): ${slot.reason}`);
    throw new ArrayFailedError(`cannot assemble ${authority.level} array ${authority.arrayUuid}: too many members unavailable\n${down.join('\n')}`);
  }
  const identity = identityOf(authority);
  const set = new MemberSet(identity, slots, authority.eventCounter, false, deps.logger);
  const dirty = authority.clean ? [] : await dirtyRegionsOf(set);
  await set.writeSuperblocks();
  const array = new RaidArray(set, deps);
  for (const slot of slots) if (slot.state !== 'active') deps.logger.warn(`raid member ${slot.index} (${slot.path || 'no file'}) is ${slot.state}: ${slot.reason}`);
  if (!authority.clean) {
    deps.logger.warn(`array ${identity.arrayUuid} was not stopped cleanly: resyncing ${dirty.length} dirty region(s)`);
    await resyncRegions(array, dirty);
  }
  return array;
}

async function inspect(path: string, open: (path: string) => Promise<MemberDevice>): Promise<Candidate> {
  let device: MemberDevice;
  try {
    device = await open(path);
  } catch (error) {
    return { path, device: null, superblock: null, problem: (error as Error).message };
  }
  try {
    const copies = Buffer.alloc(2 * SUPERBLOCK_BYTES);
    await device.read(0, copies);
    const superblock = newestSuperblock(copies.subarray(0, SUPERBLOCK_BYTES), copies.subarray(SUPERBLOCK_BYTES));
    return { path, device, superblock, problem: '' };
  } catch (error) {
    await device.close();
    const reason = error instanceof FormatError ? error.message : `unreadable: ${(error as Error).message}`;
    return { path, device: null, superblock: null, problem: reason };
  }
}

/** One slot per member index of the authoritative superblock, filled from the files that claim it. */
async function buildSlots(authority: Superblock, candidates: Candidate[], deps: RaidDependencies): Promise<Slot[]> {
  const slots: Slot[] = [];
  for (let index = 0; index < authority.memberCount; index++) {
    const claimants = candidates.filter((c) => c.superblock?.arrayUuid === authority.arrayUuid && c.superblock.memberIndex === index);
    const best = claimants.sort((a, b) => (b.superblock as Superblock).eventCounter - (a.superblock as Superblock).eventCounter)[0];
    for (const extra of claimants.slice(1)) {
      deps.logger.warn(`${extra.path} also claims member ${index} with an older event counter; ignored`);
      await extra.device?.close();
    }
    slots.push(await slotFor(index, authority, best));
  }
  return slots;
}

async function slotFor(index: number, authority: Superblock, candidate: Candidate | undefined): Promise<Slot> {
  const recorded = authority.memberStates[index] ?? 'missing';
  if (!candidate || !candidate.device) return newSlot(index, candidate?.path ?? '', null, 'missing', null, 'no file given for this member');
  const superblock = candidate.superblock as Superblock;
  const device = candidate.device;
  if (recorded === 'failed' || recorded === 'missing' || recorded === 'rebuilding') {
    const why = recorded === 'rebuilding' ? 'its rebuild did not finish' : `recorded as ${recorded}`;
    return newSlot(index, candidate.path, device, 'failed', null, `${why}; rebuild it`);
  }
  // One event behind while the newest superblock still lists the member active means only the last
  // superblock write missed it (a crash while superblocks went out in parallel): every change that
  // could have left its data behind (failure, absence) is recorded as a state, and that is active.
  if (superblock.eventCounter < authority.eventCounter - 1) {
    return newSlot(index, candidate.path, device, 'failed', null, `stale: event counter ${superblock.eventCounter} < ${authority.eventCounter}; rebuild it`);
  }
  const needed = authority.dataOffset + authority.memberDataBytes;
  const size = await device.sizeBytes();
  if (size < needed) return newSlot(index, candidate.path, device, 'failed', null, `truncated: ${size} bytes, needs ${needed}; replace it`);
  const tableBytes = Buffer.alloc(authority.checksumBytes);
  await device.read(authority.checksumOffset, tableBytes);
  const checksums = ChecksumTable.decode(tableBytes, authority.memberDataBytes / BLOCK_BYTES);
  return newSlot(index, candidate.path, device, 'active', checksums);
}

/** The union of every node's bitmap slot on every active member: anything any writer marked. */
async function dirtyRegionsOf(set: MemberSet): Promise<number[]> {
  const { bitmapOffset, bitmapSlotBytes, bitmapSlotCount, bitmapRegionBytes, memberDataBytes } = set.identity;
  const dirty = new Set<number>();
  for (const slot of set.slots) {
    if (slot.state !== 'active' || slot.device === null) continue;
    const area = Buffer.alloc(bitmapSlotBytes * bitmapSlotCount);
    await slot.device.read(bitmapOffset, area);
    for (let node = 0; node < bitmapSlotCount; node++) {
      try {
        const bits = WriteIntentBitmap.decodeSlot(area.subarray(node * bitmapSlotBytes, (node + 1) * bitmapSlotBytes), bitmapRegionBytes, memberDataBytes);
        for (const region of bits.dirtyRegions()) dirty.add(region);
      } catch {
        // A bitmap that does not decode cannot say what is clean: resync every region.
        for (let region = 0; region < set.bitmap.regionCount; region++) dirty.add(region);
      }
    }
  }
  for (const region of dirty) set.bitmap.set(region);
  return [...dirty].sort((a, b) => a - b);
}

function identityOf(superblock: Superblock): ArrayIdentity {
  const identity: Partial<Superblock> = { ...superblock };
  for (const perMember of ['memberIndex', 'memberStates', 'eventCounter', 'clean', 'rebuildPositionBytes'] as const) delete identity[perMember];
  return identity as ArrayIdentity;
}

export function newSlot(index: number, path: string, device: MemberDevice | null, state: Slot['state'], checksums: ChecksumTable | null, reason = ''): Slot {
  return { index, path, device, state, reason, checksums, rebuildPositionBytes: 0, readErrors: 0, repairedBlocks: 0 };
}

async function closeAll(candidates: Candidate[]): Promise<void> {
  await Promise.all(candidates.map((candidate) => candidate.device?.close()));
}
