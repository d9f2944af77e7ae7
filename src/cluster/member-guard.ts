// Whether member files are in use, for offline `ftvm raid` commands that write them: a running node
// (its lease beside the members is live) or another holder (a node or an offline command with the
// array open: its holder claim, storage/holder-claims.ts). A command that writes refuses such members
// with one line naming the member and who holds it; `--force` overrides, for the expert who knows
// better (a holder on another host that is gone but cannot be proven gone from here).
//
// A lease is live when:
//   its slot is not released (holder '') and
//   - it was written on this host by a process that still runs (pid + start time, /proc): decided
//     at once, with no wait; a process killed with SIGKILL is proven gone the same way
//   - it was written on another host (or without pid and start time) and its sequence changes while
//     watched: the guard reads the slots every POLL_MS for up to `leaseMs` and stops at the first
//     change. leaseMs is the rule the nodes apply to each other (lease.ts: a lease not renewed for
//     leaseMs as seen by the observer has expired), so a node the guard takes for gone is one the
//     cluster would take over from as well. A live node renews every leaseMs/4 (500 ms by default),
//     so a live one is seen within about that; only a dead or released one costs the whole wait.
//
// The claim is written before the leases are read (claim, then look): a node that starts meanwhile
// either wrote its lease before the look (seen here) or claims the members after this claim was
// written, and then sees it and does not open the array (raid-assembly.ts).
import type { Logger } from '../observe/index.js';
import { describeHolder, HolderClaim, listHolderClaims, MemberInUseError, type HolderClaimRecord, type Lease } from '../storage/index.js';
import { processGone, readLeaseFiles } from './lease-files.js';

/** The default `leaseMs` of a cluster config: how long another host's lease is watched for a renewal. */
export const DEFAULT_GUARD_LEASE_MS = 2000;
/** How often the lease slots are read while watching. */
const POLL_MS = 100;

/** Someone using the members, and why the guard thinks so. */
export interface MemberHolder {
  /** The member file it was found beside. */
  member: string;
  /** `node a (pid 4242 on this host)`. */
  who: string;
  /** `renews its lease in d0.img.lease`. */
  why: string;
  /** false: cannot be checked from here (another host's claim, a lease not watched). */
  certain: boolean;
  /** The claim to remove when the holder is overridden (--force). */
  claim?: HolderClaimRecord;
}

interface SlotLease {
  lease: Lease;
  /** The member whose lease file holds this copy. */
  member: string;
}

export interface GuardOptions {
  /** The command, recorded in its claim: 'ftvm raid rebuild'. */
  command: string;
  /** Go ahead whatever holds the members (removing their claims); nothing is watched. */
  force: boolean;
  /** How long another host's lease is watched for a renewal (the cluster's leaseMs). */
  leaseMs: number;
  logger: Logger;
}

/**
 * Claims `members` for an offline command that writes them, after making sure nobody else uses
 * them. Throws MemberInUseError (one line) unless `force`. The caller releases the claim when done.
 */
export async function guardMembers(members: string[], options: GuardOptions): Promise<HolderClaim> {
  const claim = await HolderClaim.create(members, { kind: 'admin', name: options.command }, options.logger);
  try {
    const leases = await leaseHolders(members, options.force ? 0 : options.leaseMs, options.logger);
    const { holders, stale } = judgeClaims(await claim.others(), leases);
    // Another host's node whose lease is released, gone or run out left its claim in a crash.
    await claim.remove(stale);
    const inUse = [...leases.holders, ...holders];
    const first = inUse[0];
    if (first && !options.force) {
      const unsure = first.certain ? '' : ' (cannot be checked from here)';
      throw new MemberInUseError(first.member, `${first.member} is in use: ${first.who} ${first.why}${unsure}; stop it first, or use --force if you are sure nothing writes these files`);
    }
    for (const holder of inUse) options.logger.warn(`--force: going ahead although ${holder.who} ${holder.why}`);
    await claim.remove(inUse.flatMap((holder) => (holder.claim ? [holder.claim] : [])));
    return claim;
  } catch (error) {
    await claim.release();
    throw error;
  }
}

/**
 * Who uses the members as far as can be told at once, changing nothing: for `status` and
 * `examine`, which only warn. Another host's lease is reported as not watched.
 */
export async function memberUsers(members: string[]): Promise<MemberHolder[]> {
  const leases = await leaseHolders(members, 0);
  const claims = (await listHolderClaims(members)).filter((record) => record.alive !== false);
  return [...leases.holders, ...judgeClaims(claims, leases).holders];
}

interface LeaseFindings {
  holders: MemberHolder[];
  /** Node names whose lease is live, or could not be watched. */
  liveNodes: Set<string>;
}

/** Live leases in the members' lease files; another host's ones are watched for up to `watchMs`. */
async function leaseHolders(members: string[], watchMs: number, logger?: Logger): Promise<LeaseFindings> {
  const first = await newestLeases(members);
  const holders: MemberHolder[] = [];
  const liveNodes = new Set<string>();
  const watched: SlotLease[] = [];
  const known = new Set<number>();
  for (const [slot, found] of first) {
    if (found.lease.holder === '') continue;
    const gone = processGone(found.lease);
    if (gone === true) continue;
    if (gone === false) {
      holders.push(leaseHolder(found, 'renews its lease in', true));
      liveNodes.add(found.lease.holder);
      known.add(slot);
    } else {
      watched.push(found);
    }
  }
  if (watched.length === 0) return { holders, liveNodes };
  if (watchMs <= 0) {
    for (const found of watched) {
      holders.push(leaseHolder(found, 'holds an unreleased lease (another host: not watched) in', false));
      liveNodes.add(found.lease.holder);
    }
    return { holders, liveNodes };
  }
  const names = watched.map((found) => describeHolder({ kind: 'node', name: found.lease.holder, pid: found.lease.pid, host: found.lease.host })).join(', ');
  logger?.info(`watching the lease of ${names} for up to ${watchMs} ms: a process of another host is alive only if it renews its lease`);
  const renewed = await watchForRenewal(members, first, known, watchMs);
  if (renewed) {
    holders.push(leaseHolder(renewed, 'renewed its lease while watched, in', true));
    liveNodes.add(renewed.lease.holder);
  }
  return { holders, liveNodes };
}

/** The first unreleased slot whose sequence changes within `watchMs` (a node renewing, or one starting), or null. */
async function watchForRenewal(members: string[], before: Map<number, SlotLease>, known: Set<number>, watchMs: number): Promise<SlotLease | null> {
  const deadline = performance.now() + watchMs;
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_MS, Math.max(0, deadline - performance.now()))));
    for (const [slot, now] of await newestLeases(members)) {
      if (known.has(slot) || now.lease.holder === '' || processGone(now.lease) === true) continue;
      if (now.lease.sequence !== before.get(slot)?.lease.sequence) return now;
    }
  }
  return null;
}

/** Slot → its newest lease over all the members' lease files (as a reader of the lease area takes it). */
async function newestLeases(members: string[]): Promise<Map<number, SlotLease>> {
  const newest = new Map<number, SlotLease>();
  const views = await readLeaseFiles(members);
  views.forEach((view, index) => {
    view.slots.forEach((lease, slot) => {
      if (!lease) return;
      const known = newest.get(slot);
      if (!known || lease.sequence > known.lease.sequence) newest.set(slot, { lease, member: members[index] as string });
    });
  });
  return newest;
}

function leaseHolder(found: SlotLease, why: string, certain: boolean): MemberHolder {
  const { lease } = found;
  return { member: found.member, who: describeHolder({ kind: 'node', name: lease.holder, pid: lease.pid, host: lease.host }), why: `${why} ${found.member}.lease`, certain };
}

/**
 * Other holders' claims: alive on this host, or of another host and not proven gone. Another host's
 * node claim is judged by that node's lease (no live lease: it crashed with the array open, the
 * claim is stale); another host's offline command has no lease, so it counts as a holder.
 */
function judgeClaims(claims: readonly HolderClaimRecord[], leases: LeaseFindings): { holders: MemberHolder[]; stale: HolderClaimRecord[] } {
  const holders: MemberHolder[] = [];
  const stale: HolderClaimRecord[] = [];
  for (const record of claims) {
    if (record.alive === null && record.kind === 'node' && !leases.liveNodes.has(record.name)) {
      stale.push(record);
      continue;
    }
    holders.push({ member: record.member, who: describeHolder(record), why: `has the array open (holder claim ${record.file})`, certain: record.alive === true, claim: record });
  }
  return { holders, stale };
}
