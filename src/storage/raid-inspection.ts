// Looking at member files without changing them: what `ftvm raid status` (offline) and
// `ftvm raid examine` show, md-style (`mdadm --detail` / `--examine` never write either).
//
// Every file is opened read-only (FileMember.openReadOnly: O_RDONLY, writes refused), and the array
// view comes from the same planning code as assembly (planAssembly), which stops before assembly's
// first write. So the view says what an assembly *would* do (record a member missing or failed,
// resync dirty regions, raise the event counter) instead of doing it: running a status must not
// turn a left-off file into a failed member, nor resync regions under a node that has them open.
import { silentLogger } from '../observe/index.js';
import { FormatError } from './crc.js';
import { FileMember, type MemberDevice } from './member.js';
import { MemberSet, type Slot } from './member-set.js';
import { RaidArray, type ArrayStatus } from './raid-array.js';
import { closeAll, dirtyRegionsOf, identityOf, planAssembly, readBitmapSlots } from './raid-assembly.js';
import { decodeSuperblock, newestSuperblock, SUPERBLOCK_BYTES, type Superblock } from './superblock.js';

export interface ArrayInspection {
  /** The array as assembly would find it; the event counter is the one on disk now. */
  status: ArrayStatus;
  /** The newest superblock says the array was stopped cleanly. */
  clean: boolean;
  /** Whether an assembly would succeed (the level survives the members it would have). */
  assemblable: boolean;
  /** Regions an assembly would resync (none after a clean stop). */
  resyncRegions: number;
  /** Files named that assembly would not take in, with the reason. */
  leftOut: Array<{ path: string; reason: string }>;
  /** What an assembly would do to these files, one sentence each. */
  atAssembly: string[];
}

/** The array these files make, computed without writing to them. */
export async function inspectArray(paths: string[]): Promise<ArrayInspection> {
  const plan = await planAssembly(paths, FileMember.openReadOnly, { readChecksums: false });
  try {
    const { authority, slots } = plan;
    const identity = identityOf(authority);
    const dirty = authority.clean || !plan.intact ? [] : await dirtyRegionsOf(identity, slots);
    // A MemberSet over read-only devices computes the status; nothing here calls a writing method,
    // and the devices would refuse if something did.
    const set = new MemberSet(identity, slots, authority.eventCounter, authority.clean, silentLogger());
    for (const region of dirty) set.bitmap.set(region);
    const status = new RaidArray(set, { logger: silentLogger(), now: () => Date.now() }).status();
    const taken = new Set(slots.map((slot) => slot.path));
    const leftOut = paths
      .filter((path) => !taken.has(path))
      .map((path) => ({ path, reason: plan.candidates.find((candidate) => candidate.path === path)?.problem || 'an older copy of a member another file holds' }));
    return { status, clean: authority.clean, assemblable: plan.intact, resyncRegions: dirty.length, leftOut, atAssembly: consequences(authority, slots, plan.intact, dirty.length) };
  } finally {
    await closeAll(plan.candidates);
  }
}

function consequences(authority: Superblock, slots: readonly Slot[], intact: boolean, dirtyRegions: number): string[] {
  const lines: string[] = [];
  const missing = (slot: Slot): string => `member ${slot.index}${slot.path ? ` (${slot.path})` : ''}`;
  if (!intact) {
    const down = slots.filter((slot) => slot.state !== 'active').map((slot) => `${missing(slot)}: ${slot.reason}`);
    return [`the array would not assemble: too many members unavailable for ${authority.level} (${down.join('; ')})`];
  }
  lines.push(`the event counter would go from ${authority.eventCounter} to ${authority.eventCounter + 1}: superblocks rewritten on every usable member`);
  for (const slot of slots) {
    if (slot.state === 'active') continue;
    const recorded = authority.memberStates[slot.index] ?? 'missing';
    if (recorded === 'active') {
      lines.push(`${missing(slot)} ${slot.state}: the array would assemble degraded and record it ${slot.state} (${slot.reason}); only a rebuild brings it back`);
    } else {
      lines.push(`${missing(slot)} stays out, recorded ${recorded} (${slot.reason})`);
    }
  }
  if (!authority.clean) {
    lines.push(`${dirtyRegions} dirty region(s) would be resynced: the array was not stopped cleanly (a crash, or a node has it open now)`);
    const down = slots.filter((slot) => slot.state !== 'active').map((slot) => slot.index);
    if (authority.level === 'raid5' && down.length > 0 && dirtyRegions > 0) {
      lines.push(`that resync would run degraded: member ${down.join(',')}'s chunks in those regions may not match (the raid5 write hole)`);
    }
  }
  return lines;
}

/** One superblock copy as found on disk. */
export interface SuperblockCopy {
  copy: 'A' | 'B';
  offset: number;
  /** The copy's event counter, or null when it does not decode. */
  eventCounter: number | null;
  problem: string;
}

/** One file as `ftvm raid examine` shows it: what its own superblock says, nothing combined. */
export interface MemberExamination {
  path: string;
  /** Why the file is not a member ('' when it is). */
  problem: string;
  /** The newest valid copy. */
  superblock: Superblock | null;
  copies: SuperblockCopy[];
  sizeBytes: number | null;
  /** Dirty regions in each node's bitmap slot of this member, or why the slot does not decode. */
  bitmapSlots: Array<number | string>;
}

/** Each file's own superblock, superblock copies and bitmap slots, read-only (`mdadm --examine`). */
export async function examineMembers(paths: string[]): Promise<MemberExamination[]> {
  return Promise.all(paths.map((path) => examineOne(path)));
}

async function examineOne(path: string): Promise<MemberExamination> {
  const found: MemberExamination = { path, problem: '', superblock: null, copies: [], sizeBytes: null, bitmapSlots: [] };
  let device: MemberDevice;
  try {
    device = await FileMember.openReadOnly(path);
  } catch (error) {
    return { ...found, problem: (error as Error).message };
  }
  try {
    found.sizeBytes = await device.sizeBytes();
    const copies = Buffer.alloc(2 * SUPERBLOCK_BYTES);
    try {
      await device.read(0, copies);
    } catch (error) {
      return { ...found, problem: `unreadable: ${(error as Error).message}` };
    }
    found.copies = (['A', 'B'] as const).map((copy, index) => {
      const offset = index * SUPERBLOCK_BYTES;
      try {
        return { copy, offset, eventCounter: decodeSuperblock(copies.subarray(offset, offset + SUPERBLOCK_BYTES)).eventCounter, problem: '' };
      } catch (error) {
        return { copy, offset, eventCounter: null, problem: (error as Error).message };
      }
    });
    try {
      found.superblock = newestSuperblock(copies.subarray(0, SUPERBLOCK_BYTES), copies.subarray(SUPERBLOCK_BYTES));
    } catch (error) {
      return { ...found, problem: error instanceof FormatError ? error.message : `unreadable: ${(error as Error).message}` };
    }
    const bitmaps = await readBitmapSlots(device, identityOf(found.superblock)).catch((error: Error) => error);
    found.bitmapSlots = bitmaps instanceof Error ? [`unreadable: ${bitmaps.message}`] : bitmaps.map((bits) => (bits instanceof Error ? bits.message : bits.dirtyCount));
    return found;
  } finally {
    await device.close();
  }
}
