// Which process wrote a record on the shared disks (a lease, a holder claim), and whether it still
// runs. A pid alone proves nothing (pids are reused), so a process is named by pid + its start time
// in clock ticks since boot (/proc/PID/stat field 22) + host: on the same host, a record whose pid is
// gone or now belongs to a process that started at another time was written by a dead process.
// Another host's processes cannot be looked at from here: the answer is then "cannot tell".
import fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';

export interface ProcessIdentity {
  pid: number;
  /** Clock ticks since boot when the process started; 0 if unknown. */
  processStart: number;
  /** Host name ('' if unknown), at most 64 bytes as the lease format stores it. */
  host: string;
}

export function thisHost(): string {
  return os.hostname().slice(0, 64);
}

/** This process, as it writes itself into leases and claims. */
export function thisProcess(): ProcessIdentity {
  return { pid: process.pid, processStart: processStartTicks(process.pid) ?? 0, host: thisHost() };
}

/**
 * Whether the process is alive: true, false (proven gone), or null (another host, or a record
 * without pid and start time: cannot tell). Synchronous because a lease keeper asks while it judges
 * slots; it reads one small /proc file. Server paths that can wait use processAliveAsync.
 */
export function processAlive(identity: ProcessIdentity): boolean | null {
  if (!checkable(identity)) return null;
  let stat: string | null;
  try {
    stat = fs.readFileSync(`/proc/${identity.pid}/stat`, 'utf8');
  } catch {
    stat = null;
  }
  return stat !== null && statShowsAlive(stat, identity.processStart);
}

/** processAlive without blocking the event loop. */
export async function processAliveAsync(identity: ProcessIdentity): Promise<boolean | null> {
  if (!checkable(identity)) return null;
  const stat = await readFile(`/proc/${identity.pid}/stat`, 'utf8').catch(() => null);
  return stat !== null && statShowsAlive(stat, identity.processStart);
}

/**
 * Whether a /proc/PID/stat line is the process that started at `processStart` and still runs. A
 * killed process stays in /proc as a zombie (state Z, then X) until its parent reaps it, with its
 * start time unchanged; it runs no code and its sockets are closed, so it counts as gone, also
 * while its parent is slow to reap it (a survivor would otherwise wait for that to take over).
 */
export function statShowsAlive(stat: string, processStart: number): boolean {
  const state = stat.charAt(stat.lastIndexOf(')') + 2);
  return state !== 'Z' && state !== 'X' && startTicksOf(stat) === processStart;
}

export function processStartTicks(pid: number): number | null {
  try {
    return startTicksOf(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

function checkable(identity: ProcessIdentity): boolean {
  return identity.host !== '' && identity.host === thisHost() && identity.pid !== 0 && identity.processStart !== 0;
}

/** Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces, so count from its ')'. */
function startTicksOf(stat: string): number | null {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[19]);
  return Number.isSafeInteger(ticks) ? ticks : null;
}
