// A seeded simulation of the fencing layer (the rule: "at most one authority"): two or three real
// LeaseKeepers over one simulated lease disk and one simulated clock, under faults.
//
//   time      one global clock (ms); events run in time order, ties in the order they were queued
//   disk      two copies per slot (sequence parity, as on the real lease files), a read returns the
//             newest copy; a write lands at a random instant between its start and its completion
//             (writes to one copy in the order issued), takes 0–1.5×leaseMs, and fails now and
//             then (a failed write may still have landed)
//   pause     SIGSTOP: a node's timers and I/O completions are held until it resumes; its I/O
//             still lands, and time (so its lease) runs on
//   crash     the node abandons its keeper and runs nothing more (its submitted writes still land);
//             it restarts later as a new LeaseKeeper, as does a node that was fenced
//   authority modelled on authority.ts: a node claims (claimEpoch) when every lower node and the
//             current holder look expired to it (the holder itself, restarted, claims again at
//             once); it stays authority until it sees holds() false
//             or is fenced; the claim pause is claimPauseMs's rule (leaseMs/4 while any other
//             node's lease is live, else 0)
//
// Checked after every event: no two live nodes are authority with holds() true at once (the state
// only changes at events and holds() only falls between them, so this covers every instant), and
// each new authority's epoch is above every earlier one. After the faults stop, a quiet period must
// end with an authority (liveness); recovery times after an authority is lost are counted.
import type { Clock } from '../../src/core/index.js';
import { ClaimLostError, LeaseKeeper, type LeaseDisk } from '../../src/cluster/lease.js';
import type { Lease } from '../../src/storage/index.js';
import { randomInt, seededRandom } from '../support/seeded-random.js';

export interface LeaseSimOptions {
  /** 2 or 3; drawn from the seed when not given. */
  nodes?: number;
  leaseMs?: number;
  /** Simulated milliseconds with faults, then `quietMs` without. */
  faultMs?: number;
  quietMs?: number;
  /** Keep the last trace lines (slower). */
  trace?: boolean;
  /**
   * Whether a claim's own write (a write raising the epoch this node last wrote) may fail like any
   * other. Off works around the bug this simulation found (claimEpoch misses a failed claim write
   * while an earlier renewal still covers the lease; seed 2), so the other properties stay tested.
   */
  failClaimWrites?: boolean;
  /**
   * Whether a claim may skip its pause when every other lease looks expired (claimPauseMs's rule).
   * Off (always pause leaseMs/4) works around the second bug found: the caller's view is stale, a
   * competitor may have just come alive, and two claims of one epoch both win (seeds 17, 111).
   */
  zeroPauseClaims?: boolean;
  /** Broken on purpose, to prove the checker fails: take over without waiting for any lease to expire. */
  takeoverWithoutExpiry?: boolean;
}

export interface LeaseSimStats {
  nodes: number;
  simulatedMs: number;
  claims: number;
  claimsLost: number;
  takeovers: number;
  crashes: number;
  authorityCrashes: number;
  pauses: number;
  failedWrites: number;
  slowWrites: number;
  fenced: number;
  demoted: number;
  acquireFailures: number;
  /** Times from losing the authority (crash, fence, lapse) to the next one taking over. */
  recoveries: number[];
}

export interface LeaseSimResult {
  ok: boolean;
  failure?: string;
  steps: number;
  stats: LeaseSimStats;
  trace: string[];
}

interface Incarnation {
  readonly node: number;
  readonly generation: number;
  readonly keeper: LeaseKeeper;
  alive: boolean;
  acquired: boolean;
  authority: boolean;
  claiming: boolean;
  epoch: number;
  /** Highest epoch this incarnation has written (a write above it is a claim). */
  writtenEpoch: number;
}

interface SimEvent {
  readonly at: number;
  readonly order: number;
  /** Held while this incarnation's node is paused; dropped once it is dead. Null: the kernel/world. */
  readonly owner: Incarnation | null;
  readonly label: string;
  readonly run: () => void;
  cancelled: boolean;
}

const TRACE_LINES = Number(process.env.LEASE_SIM_TRACE_LINES ?? 60);
const STEP_LIMIT = 400_000;
const DECIDE_MS = 100;

export async function runLeaseSimulation(seed: number, options: LeaseSimOptions = {}): Promise<LeaseSimResult> {
  const random = seededRandom(seed);
  const between = (low: number, high: number): number => low + random() * (high - low);
  const nodeCount = options.nodes ?? 2 + randomInt(random, 2);
  const leaseMs = options.leaseMs ?? 1000;
  const faultMs = options.faultMs ?? 20 * leaseMs;
  const quietMs = options.quietMs ?? 12 * leaseMs;
  const endMs = faultMs + quietMs;

  const stats: LeaseSimStats = {
    nodes: nodeCount,
    simulatedMs: 0,
    claims: 0,
    claimsLost: 0,
    takeovers: 0,
    crashes: 0,
    authorityCrashes: 0,
    pauses: 0,
    failedWrites: 0,
    slowWrites: 0,
    fenced: 0,
    demoted: 0,
    acquireFailures: 0,
    recoveries: [],
  };
  const trace: string[] = [];
  let now = 0;
  let order = 0;
  let steps = 0;
  let failure: string | undefined;
  let queue: SimEvent[] = [];
  const pausedUntil: number[] = Array.from({ length: nodeCount }, () => 0);
  const flakyUntil: number[] = Array.from({ length: nodeCount }, () => 0);
  const current: Array<Incarnation | null> = Array.from({ length: nodeCount }, () => null);
  const copies: Array<[Lease | null, Lease | null]> = Array.from({ length: nodeCount }, () => [null, null]);
  const lastLanding: number[] = [];
  /** The holder as the cluster record would name it: the last node whose claim succeeded. */
  let holderId: number | null = null;
  let highestAuthorityEpoch = 0;
  let authorityLostAt: number | null = 0;

  const note = (line: string): void => {
    if (!options.trace) return;
    trace.push(`${now.toFixed(1).padStart(8)} ${line}`);
    if (trace.length > TRACE_LINES) trace.shift();
  };
  const fail = (why: string): void => {
    failure ??= `seed ${seed} at ${now.toFixed(1)} ms: ${why}`;
  };
  const schedule = (delayMs: number, owner: Incarnation | null, label: string, run: () => void): SimEvent => {
    const event: SimEvent = { at: now + Math.max(0, delayMs), order: order++, owner, label, run, cancelled: false };
    queue.push(event);
    return event;
  };
  const effectiveAt = (event: SimEvent): number => (event.owner ? Math.max(event.at, pausedUntil[event.owner.node] as number) : event.at);
  const next = (): SimEvent | null => {
    let best: SimEvent | null = null;
    let bestAt = Infinity;
    for (const event of queue) {
      const at = effectiveAt(event);
      if (at < bestAt || (at === bestAt && best !== null && (event.at < best.at || (event.at === best.at && event.order < best.order)))) {
        best = event;
        bestAt = at;
      }
    }
    return best;
  };
  const name = (inc: Incarnation): string => `n${inc.node}.${inc.generation}`;

  // The shared lease disk: two copies per slot, the newest sequence wins on read.
  const newest = (slot: number): Lease | null => {
    const [a, b] = copies[slot] as [Lease | null, Lease | null];
    const pick = !a ? b : !b ? a : a.sequence >= b.sequence ? a : b;
    return pick ? { ...pick } : null;
  };
  const diskFor = (self: () => Incarnation): LeaseDisk => {
    return {
      readAll: () =>
        new Promise((resolve) => {
          const me = self();
          schedule(between(0, 3), null, `${name(me)} read lands`, () => {
            const snapshot = copies.map((_, slot) => newest(slot));
            schedule(0, me, `${name(me)} read done`, () => resolve(snapshot));
          });
        }),
      write: (lease) =>
        new Promise((resolve, reject) => {
          const me = self();
          // After the faults stop, writes are ordinary: the quiet period tests liveness.
          const draw = now < faultMs ? random() : 0.5;
          const latency = draw < 0.1 ? between(0, 1) : draw < 0.85 ? between(1, 40) : draw < 0.95 ? between(40, leaseMs / 2) : between(leaseMs / 2, 1.5 * leaseMs);
          if (latency > leaseMs / 4) stats.slowWrites++;
          const record = { ...lease };
          const isClaim = me.writtenEpoch >= 0 && record.epoch > me.writtenEpoch;
          me.writtenEpoch = Math.max(me.writtenEpoch, record.epoch);
          const failing = now < faultMs && now < (flakyUntil[me.node] as number) && random() < 0.6 && (options.failClaimWrites !== false || !isClaim);
          const lands = !failing || random() < 0.4;
          if (failing) stats.failedWrites++;
          // Writes to one copy land in the order they were issued (the page cache keeps the newest
          // bytes; a slow sync does not bring older ones back), and a sync waits for its landing.
          let landAt = now + random() * latency;
          const copy = record.slot * 2 + (record.sequence % 2);
          landAt = Math.max(landAt, lastLanding[copy] ?? 0);
          lastLanding[copy] = landAt;
          const doneIn = Math.max(latency, landAt - now);
          if (lands) {
            schedule(landAt - now, null, `${name(me)} write seq ${record.sequence} epoch ${record.epoch}${record.holder === '' ? ' (release)' : ''} lands`, () => {
              (copies[record.slot] as [Lease | null, Lease | null])[record.sequence % 2] = record;
            });
          }
          schedule(doneIn, me, `${name(me)} write seq ${record.sequence} ${failing ? 'fails' : 'done'} (${doneIn.toFixed(0)} ms)`, () =>
            failing ? reject(new Error('lease write failed on a majority of files')) : resolve(),
          );
        }),
    };
  };

  const loseAuthority = (inc: Incarnation, why: string): void => {
    if (!inc.authority) return;
    inc.authority = false;
    note(`${name(inc)} is no longer authority: ${why}`);
    if (holderId === inc.node) authorityLostAt ??= now;
  };

  const stop = (inc: Incarnation, why: string, restartAfterMs: number): void => {
    if (!inc.alive) return;
    loseAuthority(inc, why);
    inc.alive = false;
    inc.keeper.abandon();
    queue = queue.filter((event) => event.owner !== inc);
    note(`${name(inc)} stops (${why}); restarts in ${restartAfterMs.toFixed(0)} ms`);
    schedule(restartAfterMs, null, `n${inc.node} restarts`, () => start(inc.node, inc.generation + 1));
  };

  const wantsAuthority = (inc: Incarnation): boolean => {
    const gone = (slot: number): boolean => options.takeoverWithoutExpiry === true || inc.keeper.expired(slot);
    // The real node first probes its partners over the link (findHolder, authority.ts): one that
    // answers that it holds the array, or is taking it (it says so before it claims), blocks the
    // claim. A paused node does not answer.
    for (const other of current) {
      if (!other || other === inc || !other.alive || (pausedUntil[other.node] as number) > now) continue;
      if ((other.claiming || other.authority) && !gone(other.node)) return false;
    }
    // The named holder, restarted: it holds the array again (a new epoch), or nobody would.
    if (holderId === inc.node) return true;
    for (let slot = 0; slot < nodeCount; slot++) {
      if (slot === inc.node) continue;
      if (slot < inc.node && !gone(slot)) return false;
      if (slot === holderId && !gone(slot)) return false;
    }
    return true;
  };

  const claim = async (inc: Incarnation): Promise<void> => {
    inc.claiming = true;
    stats.claims++;
    let othersLive = false;
    for (let slot = 0; slot < nodeCount; slot++) if (slot !== inc.node && !inc.keeper.expired(slot)) othersLive = true;
    const pauseMs = othersLive || options.zeroPauseClaims === false ? Math.floor(leaseMs / 4) : 0;
    note(`${name(inc)} claims (pause ${pauseMs} ms, holder ${holderId === null ? 'none' : `n${holderId}`})`);
    try {
      // What wantsAuthority required to be gone: lower nodes and the named holder.
      const mustBeGone = holderId === inc.node ? [] : Array.from({ length: nodeCount }, (_, slot) => slot).filter((slot) => slot !== inc.node && (slot < inc.node || slot === holderId));
      const epoch = await inc.keeper.claimEpoch(pauseMs, options.takeoverWithoutExpiry === true ? [] : mustBeGone);
      if (!inc.alive) return;
      note(`${name(inc)} becomes authority at epoch ${epoch} (holds ${inc.keeper.holds()}, ${inc.keeper.remainingMs().toFixed(0)} ms left)`);
      if (epoch <= highestAuthorityEpoch) fail(`${name(inc)} became authority at epoch ${epoch}, not above the earlier authority's ${highestAuthorityEpoch}`);
      highestAuthorityEpoch = Math.max(highestAuthorityEpoch, epoch);
      // The previous authority is not told: it gives way only when its own keeper fences it or
      // its lease lapses, which is what the invariant is about.
      holderId = inc.node;
      inc.authority = true;
      inc.epoch = epoch;
      stats.takeovers++;
      if (authorityLostAt !== null) stats.recoveries.push(now - authorityLostAt);
      authorityLostAt = null;
    } catch (error) {
      if (!(error instanceof ClaimLostError)) fail(`claimEpoch threw ${(error as Error).message}`);
      stats.claimsLost++;
      note(`${name(inc)} claim lost: ${(error as Error).message}`);
    } finally {
      inc.claiming = false;
    }
  };

  const decide = (inc: Incarnation): void => {
    if (!inc.alive) return;
    if (inc.authority) {
      if (!inc.keeper.holds()) {
        stats.demoted++;
        loseAuthority(inc, `its lease lapsed (${inc.keeper.remainingMs().toFixed(0)} ms)`);
      }
    } else if (!inc.claiming && inc.keeper.holds() && wantsAuthority(inc)) {
      void claim(inc);
    }
    clockFor(() => inc).setTimer(between(DECIDE_MS / 2, DECIDE_MS * 1.5), () => decide(inc));
  };

  const clockFor = (self: () => Incarnation): Clock => ({
    now: () => now,
    wallNow: () => 1_700_000_000_000 + now,
    setTimer: (ms, work) => {
      const event = schedule(ms, self(), 'timer', work);
      return () => {
        event.cancelled = true;
      };
    },
    defer: (work) => void schedule(0, self(), 'deferred', work),
  });

  function start(node: number, generation: number): void {
    let inc: Incarnation | null = null;
    const self = (): Incarnation => inc as Incarnation;
    const keeper = new LeaseKeeper(node, `n${node}`, { pid: 100 + generation, processStart: generation, host: `host${node}` }, diskFor(self), clockFor(self), {
      leaseMs,
      processGone: () => null,
    });
    inc = { node, generation, keeper, alive: true, acquired: false, authority: false, claiming: false, epoch: 0, writtenEpoch: -1 };
    const me = inc;
    current[node] = me;
    keeper.onFenced = (reason) => {
      stats.fenced++;
      loseAuthority(me, `fenced: ${reason}`);
      note(`${name(me)} fenced: ${reason}`);
      schedule(0, null, `${name(me)} exits after fencing`, () => stop(me, 'fenced', between(leaseMs / 2, 3 * leaseMs)));
    };
    note(`${name(me)} starts`);
    keeper.acquire().then(
      () => {
        if (!me.alive) return;
        me.acquired = true;
        note(`${name(me)} acquired its lease at epoch ${keeper.epoch}`);
        decide(me);
      },
      (error: Error) => {
        stats.acquireFailures++;
        note(`${name(me)} acquire failed: ${error.message}`);
        stop(me, 'acquire failed', between(leaseMs / 4, leaseMs));
      },
    );
  }

  const injectFault = (): void => {
    if (now >= faultMs) return;
    const draw = random();
    const node = randomInt(random, nodeCount);
    if (draw < 0.3) {
      const kind = random();
      const ms = kind < 0.5 ? between(0, leaseMs / 2) : kind < 0.9 ? between(leaseMs / 2, 2 * leaseMs) : between(2 * leaseMs, 3 * leaseMs);
      stats.pauses++;
      pausedUntil[node] = Math.max(pausedUntil[node] as number, now + ms);
      note(`n${node} paused for ${ms.toFixed(0)} ms`);
    } else if (draw < 0.42) {
      // Half the crashes aimed at the authority, where they matter.
      const target = random() < 0.5 && holderId !== null ? holderId : node;
      const inc = current[target];
      if (inc?.alive) {
        stats.crashes++;
        if (inc.authority) stats.authorityCrashes++;
        stop(inc, 'crash', between(leaseMs / 2, 4 * leaseMs));
      }
    } else if (draw < 0.55) {
      flakyUntil[node] = now + between(leaseMs / 2, 3 * leaseMs);
      note(`n${node}'s lease writes fail now and then until ${(flakyUntil[node] as number).toFixed(0)}`);
    }
    schedule(between(100, 700), null, 'fault', injectFault);
  };

  const check = (): void => {
    const acking = current.filter((inc): inc is Incarnation => !!inc && inc.alive && inc.authority && inc.keeper.holds());
    if (acking.length > 1) {
      fail(`two authorities hold their leases at once: ${acking.map((inc) => `${name(inc)} (epoch ${inc.epoch}, ${inc.keeper.remainingMs().toFixed(1)} ms left)`).join(' and ')}`);
    }
  };

  for (let node = 0; node < nodeCount; node++) schedule(between(0, leaseMs / 2), null, `n${node} boots`, () => start(node, 0));
  schedule(between(leaseMs, 2 * leaseMs), null, 'fault', injectFault);

  while (failure === undefined) {
    const event = next();
    if (!event) break;
    const at = effectiveAt(event);
    if (at > endMs) break;
    queue.splice(queue.indexOf(event), 1);
    if (event.cancelled) continue;
    now = Math.max(now, at);
    steps++;
    if (steps > STEP_LIMIT) {
      fail(`more than ${STEP_LIMIT} steps`);
      break;
    }
    if (event.label !== 'timer') note(event.label);
    event.run();
    // Every promise the event settled runs on here: the disk and timers are all events, so nothing
    // else is pending once the microtask queue drains.
    await new Promise<void>((resolve) => setImmediate(resolve));
    check();
  }
  stats.simulatedMs = now;
  if (failure === undefined) {
    const authority = current.find((inc) => inc?.alive && inc.authority && inc.keeper.holds());
    if (!authority) fail(`liveness: no authority holds its lease after ${quietMs} ms without faults (holder ${holderId === null ? 'none' : `n${holderId}`})`);
  }
  return failure === undefined ? { ok: true, steps, stats, trace } : { ok: false, failure, steps, stats, trace };
}

export interface LeaseRunSummary {
  seedsRun: number;
  seconds: number;
  steps: number;
  failed: { seed: number; failure: string } | null;
  totals: Omit<LeaseSimStats, 'recoveries' | 'nodes' | 'simulatedMs'>;
  recoveries: { count: number; meanMs: number; maxMs: number };
}

/** Runs seeds start … start+count−1, stopping at the first failure. */
export async function runLeaseSeeds(start: number, count: number, options: LeaseSimOptions = {}): Promise<LeaseRunSummary> {
  const began = performance.now();
  const totals = { claims: 0, claimsLost: 0, takeovers: 0, crashes: 0, authorityCrashes: 0, pauses: 0, failedWrites: 0, slowWrites: 0, fenced: 0, demoted: 0, acquireFailures: 0 };
  const recoveries: number[] = [];
  let steps = 0;
  let seedsRun = 0;
  let failed: LeaseRunSummary['failed'] = null;
  for (let seed = start; seed < start + count; seed++) {
    const result = await runLeaseSimulation(seed, options);
    seedsRun++;
    steps += result.steps;
    for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += result.stats[key];
    recoveries.push(...result.stats.recoveries);
    if (!result.ok) {
      failed = { seed, failure: result.failure as string };
      break;
    }
  }
  const meanMs = recoveries.length ? recoveries.reduce((sum, ms) => sum + ms, 0) / recoveries.length : 0;
  return {
    seedsRun,
    seconds: (performance.now() - began) / 1000,
    steps,
    failed,
    totals,
    recoveries: { count: recoveries.length, meanMs, maxMs: Math.max(0, ...recoveries) },
  };
}
