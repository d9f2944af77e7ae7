// Administrative operations on an assembled array, with the checks that make a refused request
// change nothing: the member exists, losing it leaves the data intact, a new file does not exist.
// The CLI runs them offline on member files; a running node runs them for its control socket.
import { InputError } from '../core/index.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { survives } from './member-set.js';
import type { RaidArray } from './raid-array.js';
import { rebuildMember, replaceMember, type ProgressCallback } from './raid-maintenance.js';

/** A refused administrative request: printed as `ftvm: <message>`, exit code 1. */
export class RaidAdminError extends InputError {
  override name = 'RaidAdminError';
}

/** Throws unless `member` names a slot of the array. */
export function checkMemberIndex(array: RaidArray, member: number): void {
  const count = array.members.slots.length;
  if (!Number.isInteger(member) || member < 0 || member >= count) {
    throw new RaidAdminError(`--member ${member}: the array has members 0..${count - 1}`);
  }
}

/** Throws when taking `member` out of service would lose data (md refuses this too). */
function checkCanLose(array: RaidArray, member: number, action: string): void {
  const usable = array.members.slots.map((slot) => slot.device !== null && slot.state === 'active' && slot.index !== member);
  if (!survives(array.members.identity.level, usable)) {
    throw new RaidAdminError(`refusing to ${action} member ${member}: the ${array.members.identity.level} array has no other copy of its data`);
  }
}

export async function failArrayMember(array: RaidArray, member: number): Promise<void> {
  checkMemberIndex(array, member);
  const slot = array.members.slots[member];
  if (slot?.state !== 'active') throw new RaidAdminError(`member ${member} is already ${slot?.state}`);
  checkCanLose(array, member, 'fail');
  await array.members.markFailed(member, 'failed by administrator');
}

export async function rebuildArrayMember(array: RaidArray, member: number, onProgress?: ProgressCallback): Promise<void> {
  checkMemberIndex(array, member);
  const slot = array.members.slots[member];
  if (slot?.device === null) throw new RaidAdminError(`member ${member} has no file to rebuild onto; use 'ftvm raid replace'`);
  if (slot?.state === 'active') throw new RaidAdminError(`member ${member} is active; fail it first to rebuild it`);
  await rebuildMember(array, member, onProgress);
}

export async function replaceArrayMember(array: RaidArray, member: number, newPath: string, onProgress?: ProgressCallback): Promise<void> {
  checkMemberIndex(array, member);
  // The engine would mark an active member failed before finding the new file taken: check first.
  await refuseExisting([newPath]);
  if (array.members.slots[member]?.state === 'active') checkCanLose(array, member, 'replace');
  await replaceMember(array, member, newPath, onProgress);
}

export async function refuseExisting(paths: string[]): Promise<void> {
  const seen = new Set<string>();
  for (const file of paths) {
    const resolved = path.resolve(file);
    if (seen.has(resolved)) throw new RaidAdminError(`${file} is named twice`);
    seen.add(resolved);
  }
  const existing: string[] = [];
  for (const file of paths) {
    const found = await fs.lstat(file).then(() => true, (error: NodeJS.ErrnoException) => error.code !== 'ENOENT');
    if (found) existing.push(file);
  }
  if (existing.length > 0) throw new RaidAdminError(`refusing to overwrite existing file(s): ${existing.join(', ')}`);
}
