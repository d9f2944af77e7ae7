// Creating an array on new member files, and assembling one from the files it was made of.
//
// Assembly trusts superblocks, md-style: every member carries the array uuid, its own index and an
// event counter bumped on every state change. The member(s) with the highest counter speak for the
// array; a member with a lower counter missed changes (it was away while the others were written)
// and is stale: kept out of reads and writes until rebuilt. A file from another array, or one that
// is not a member at all, is refused with its reason rather than silently ignored.
import { InputError } from '../core/index.js';
import { randomUUID } from 'node:crypto';
import { ChecksumTable } from './checksum-table.js';
import { FormatError, ZERO_BLOCK_CRC } from './crc.js';
import { describeHolder, HolderClaim, MemberInUseError } from './holder-claims.js';
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

export class RaidConfigError extends InputError {
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

/** Creates new member files (never overwriting) and returns the running array; `create` makes one member (test/sim: in memory). */
export async function createArray(
  options: CreateOptions,
  deps: RaidDependencies,
  create: (path: string, sizeBytes: number) => Promise<MemberDevice> = FileMember.create,
): Promise<RaidArray> {
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
    zeroEntries: true,
  };
  const blockCount = options.memberDataBytes / BLOCK_BYTES;
  const slots: Slot[] = [];
  try {
    for (const [index, path] of options.memberPaths.entries()) {
      const device = await create(path, layout.fileBytes);
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

/** One file named for assembly: its open device and superblock, or why it is not a member. */
export interface Candidate {
  path: string;
  device: MemberDevice | null;
  superblock: Superblock | null;
  problem: string;
}

/** What assembly finds on the files before it writes anything (the read-only half of assembly). */
export interface AssemblyPlan {
  candidates: Candidate[];
  /** The superblock that speaks for the array: the highest event counter. */
  authority: Superblock;
  /** One per member index, each with the state assembly gives it. */
  slots: Slot[];
  /** Files left out and older duplicates ignored, for the log or the administrator. */
  notes: string[];
  /** Whether the level survives with the members that would be active. */
  intact: boolean;
}

export interface AssembleOptions {
  /**
   * Records this process as the array's holder (a node's name) while the array is open, so offline
   * commands see who has the members open (holder-claims.ts). A live offline command's claim makes
   * the assembly refuse: it writes the same members.
   */
  holder?: string;
  /** The resync after an unclean stop moved on (array data bytes), called per stripe. */
  onResyncProgress?: (doneBytes: number, totalBytes: number) => void;
  /**
   * Returns before that resync is done: it runs behind I/O (RaidArray.resyncBehindIo), so a node
   * taking the array over serves at once. Without it the assembly waits (offline commands).
   */
  resyncBehindIo?: boolean;
}

/** Opens the member files, checks them against each other, resyncs after an unclean stop. */
export async function assembleArray(
  paths: string[],
  deps: RaidDependencies,
  open: (path: string) => Promise<MemberDevice> = FileMember.open,
  options: AssembleOptions = {},
): Promise<RaidArray> {
  const claim = options.holder === undefined ? null : await claimForNode(paths, options.holder, deps);
  try {
    const array = await assembleClaimed(paths, deps, open, options.onResyncProgress, options.resyncBehindIo === true);
    if (claim) array.onClose(() => claim.release());
    return array;
  } catch (error) {
    await claim?.release();
    throw error;
  }
}

/**
 * A node gives way to a live offline command only: between nodes, the leases and the epoch decide
 * who holds the array (a node taking over from one that is cut off but alive is right to open it).
 */
async function claimForNode(paths: string[], node: string, deps: RaidDependencies): Promise<HolderClaim> {
  const claim = await HolderClaim.create(paths, { kind: 'node', name: node }, deps.logger);
  const busy = (await claim.others()).find((record) => record.kind === 'admin');
  if (busy) {
    await claim.release();
    const unsure = busy.alive === null ? `; another host's process cannot be checked from here: if it is gone, remove ${busy.file}` : '';
    throw new MemberInUseError(busy.member, `${busy.member} is in use by ${describeHolder(busy)}: the array is not opened while an offline command holds it${unsure}`);
  }
  return claim;
}

async function assembleClaimed(
  paths: string[],
  deps: RaidDependencies,
  open: (path: string) => Promise<MemberDevice>,
  onResyncProgress?: (doneBytes: number, totalBytes: number) => void,
  behindIo = false,
): Promise<RaidArray> {
  const plan = await planAssembly(paths, open, { readChecksums: true });
  for (const note of plan.notes) deps.logger.warn(note);
  const { authority, slots } = plan;
  if (!plan.intact) {
    await closeAll(plan.candidates);
    const down = slots.filter((slot) => slot.state !== 'active').map((slot) => `  member ${slot.index} (${slot.path || 'no file'}): ${slot.reason}`);
    throw new ArrayFailedError(`cannot assemble ${authority.level} array ${authority.arrayUuid}: too many members unavailable\n${down.join('\n')}`);
  }
  const identity = identityOf(authority);
  const set = new MemberSet(identity, slots, authority.eventCounter, false, deps.logger);
  let dirty: number[];
  try {
    dirty = authority.clean ? [] : await dirtyRegionsOf(identity, slots);
  } catch (error) {
    await closeAll(plan.candidates);
    throw error;
  }
  for (const region of dirty) set.bitmap.set(region);
  await set.writeSuperblocks();
  const array = new RaidArray(set, deps);
  for (const slot of slots) if (slot.state !== 'active') deps.logger.warn(`raid member ${slot.index} (${slot.path || 'no file'}) is ${slot.state}: ${slot.reason}`);
  if (!authority.clean) {
    deps.logger.warn(`array ${identity.arrayUuid} was not stopped cleanly: resyncing ${dirty.length} dirty region(s)${behindIo ? ' while it serves' : ''}`);
    const resync = resyncRegions(array, dirty, onResyncProgress);
    if (!behindIo) await resync;
    else resync.catch((error: Error) => deps.logger.error(`array resync after an unclean stop failed (stripes it did not reach are resynced as I/O reaches them, and at the next assembly): ${error.message}`));
  }
  return array;
}

/**
 * Reads every file's superblock and decides each member's state, as assembly does, without writing
 * anything: `assembleArray` goes on to record and resync, `inspectArray` only reports. The devices
 * stay open (in `candidates` and the slots) for the caller. Refuses (RaidConfigError) when no file
 * is a member or the files belong to different arrays.
 */
export async function planAssembly(paths: string[], open: (path: string) => Promise<MemberDevice>, options: { readChecksums: boolean }): Promise<AssemblyPlan> {
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
  const notes: string[] = [];
  for (const candidate of candidates) {
    if (candidate.superblock === null) notes.push(`${candidate.path} is left out of the array: ${candidate.problem}`);
  }
  try {
    const slots = await buildSlots(authority, candidates, notes, options.readChecksums);
    const intact = survives(authority.level, slots.map((slot) => slot.state === 'active'));
    return { candidates, authority, slots, notes, intact };
  } catch (error) {
    await closeAll(candidates);
    throw error;
  }
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
async function buildSlots(authority: Superblock, candidates: Candidate[], notes: string[], readChecksums: boolean): Promise<Slot[]> {
  const slots: Slot[] = [];
  for (let index = 0; index < authority.memberCount; index++) {
    const claimants = candidates.filter((c) => c.superblock?.arrayUuid === authority.arrayUuid && c.superblock.memberIndex === index);
    const best = claimants.sort((a, b) => (b.superblock as Superblock).eventCounter - (a.superblock as Superblock).eventCounter)[0];
    for (const extra of claimants.slice(1)) {
      notes.push(`${extra.path} also claims member ${index} with an older event counter; ignored`);
      await extra.device?.close();
    }
    slots.push(await slotFor(index, authority, best, readChecksums));
  }
  return slots;
}

async function slotFor(index: number, authority: Superblock, candidate: Candidate | undefined, readChecksums: boolean): Promise<Slot> {
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
  // An inspection needs no checksums: the table is 1/1024 of the data area (1 GiB per TiB).
  if (!readChecksums) return newSlot(index, candidate.path, device, 'active', null);
  const tableBytes = Buffer.alloc(authority.checksumBytes);
  await device.read(authority.checksumOffset, tableBytes);
  const checksums = ChecksumTable.decode(tableBytes, authority.memberDataBytes / BLOCK_BYTES);
  return newSlot(index, candidate.path, device, 'active', checksums);
}

/**
 * Every node's bitmap slot of one member, decoded; a slot that does not decode is an Error (it cannot
 * say what is clean).
 */
export async function readBitmapSlots(device: MemberDevice, identity: ArrayIdentity): Promise<Array<WriteIntentBitmap | Error>> {
  const { bitmapOffset, bitmapSlotBytes, bitmapSlotCount, bitmapRegionBytes, memberDataBytes } = identity;
  const area = Buffer.alloc(bitmapSlotBytes * bitmapSlotCount);
  await device.read(bitmapOffset, area);
  return [...Array(bitmapSlotCount).keys()].map((node) => {
    try {
      return WriteIntentBitmap.decodeSlot(area.subarray(node * bitmapSlotBytes, (node + 1) * bitmapSlotBytes), bitmapRegionBytes, memberDataBytes);
    } catch (error) {
      return error as Error;
    }
  });
}

/** The union of every node's bitmap slot on every active member: anything any writer marked. */
export async function dirtyRegionsOf(identity: ArrayIdentity, slots: readonly Slot[]): Promise<number[]> {
  const regionCount = Math.ceil(identity.memberDataBytes / identity.bitmapRegionBytes);
  const dirty = new Set<number>();
  for (const slot of slots) {
    if (slot.state !== 'active' || slot.device === null) continue;
    for (const bits of await readBitmapSlots(slot.device, identity)) {
      // A bitmap that does not decode cannot say what is clean: resync every region.
      const regions = bits instanceof Error ? [...Array(regionCount).keys()] : bits.dirtyRegions();
      for (const region of regions) dirty.add(region);
    }
  }
  return [...dirty].sort((a, b) => a - b);
}

export function identityOf(superblock: Superblock): ArrayIdentity {
  const identity: Partial<Superblock> = { ...superblock };
  for (const perMember of ['memberIndex', 'memberStates', 'eventCounter', 'clean', 'rebuildPositionBytes'] as const) delete identity[perMember];
  return identity as ArrayIdentity;
}

export function newSlot(index: number, path: string, device: MemberDevice | null, state: Slot['state'], checksums: ChecksumTable | null, reason = ''): Slot {
  return { index, path, device, state, reason, checksums, rebuildPositionBytes: 0, readErrors: 0, repairedBlocks: 0 };
}

export async function closeAll(candidates: Candidate[]): Promise<void> {
  await Promise.all(candidates.map((candidate) => candidate.device?.close()));
}
