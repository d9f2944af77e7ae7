// Disk leases and the epoch: the fence behind "only one node is the authority for a volume".
//
//   every node     renews its own lease slot every leaseMs/4 (sequence + 1, written to a majority
//                  of the lease files and synced); it counts as holding its lease until
//                  renewalStart + leaseMs − margin, and acknowledges nothing once that has passed
//   every node     reads all slots at each renewal; another node's lease has expired once its
//                  sequence has not changed for leaseMs on *this* node's clock (no clock sync needed:
//                  only durations on one clock are compared, as in sanlock's delta leases)
//   a takeover     claims epoch = highest seen + 1 in its own slot, waits, reads again: a competitor
//                  claiming the same or a higher epoch wins if its node id is lower (lower ids win).
//                  The wait may be 0 only when the caller knows no other node is claiming: every
//                  other lease is gone and the partner links answer (a node probes its partners for
//                  a holder, and says it holds the array before it claims). test/sim/lease-sim.ts
//                  checks these rules under pauses, crashes and slow or failing lease writes
//
// Why the margin is safe: an observer starts counting leaseMs at the earliest when it reads a new
// sequence, which is after that renewal started; the writer stops at renewalStart + leaseMs − margin.
// The state machine takes its clock, timers and disk as arguments so test/sim can drive it.
import { ClusterError, type Clock } from '../core/index.js';
import type { Lease } from '../storage/index.js';

/** Where lease slots live: read all slots (newest copy each), write one slot. */
export interface LeaseDisk {
  /** Slot index → newest valid lease, or null for a slot never written (or unreadable on every file). */
  readAll(): Promise<Array<Lease | null>>;
  /** Writes and syncs the slot on a majority of the lease files; rejects otherwise. */
  write(lease: Lease): Promise<void>;
}

export interface ProcessIdentity {
  pid: number;
  processStart: number;
  host: string;
}

export interface LeaseOptions {
  leaseMs: number;
  /**
   * Whether a lapsed lease fences this node. Off for a cluster of one node: nobody can take over
   * from it, so refusing writes after a slow renewal would only turn a stall into an outage.
   */
  fencing?: boolean;
  /** Whether the process behind a lease is known to be gone: true (proven dead), false (alive), null (cannot tell). */
  processGone(lease: Lease): boolean | null;
}

interface Observed {
  lease: Lease | null;
  /** When this node last saw the slot's sequence change (or first read it). */
  changedAt: number;
}

/**
 * How far a partner's epoch may be ahead of the highest this node has seen (its own, every lease
 * slot at the last read). Every epoch comes from a claim written to a lease slot, which this node
 * reads every leaseMs/4; a claim takes at least a synced write, so a handful can land between two
 * reads. 16 leaves room for that and refuses what no claim could do (a jump to 2^53 - 1 that would
 * leave no epoch to claim next).
 */
export const MAX_EPOCH_LEAD = 16;

/** Two: one per copy of the slot (sequence parity); a third would wait for its copy's last write anyway. */
const RENEWALS_IN_FLIGHT_MAX = 2;

/** A renewal in flight this fraction of the lease is late: the next one is due already. */
const LATE_FRACTION = 1 / 4;

export class ClaimLostError extends ClusterError {
  override name = 'ClaimLostError';
}

export class LeaseKeeper {
  private sequence = 0;
  private validUntil = Number.NEGATIVE_INFINITY;
  private observed = new Map<number, Observed>();
  private cancelTimer: (() => void) | null = null;
  private renewing = false;
  private stopped = false;
  private inFlight: Promise<boolean> | null = null;
  private lastFailure = '';
  epoch = 0;
  /** Told once when this node must stop serving; the reason is for the log. */
  onFenced: (reason: string) => void = () => undefined;
  /** Whether a newer epoch from this node's slot is explained by a live link (a takeover message will follow). */
  isLivePartner: (slot: number) => boolean = () => false;
  private fenced = false;
  private tickDueAt = 0;
  private renewalsInFlight = 0;
  /** The highest sequence of this node's writes known to have landed. */
  private highestLanded = -1;
  /** The last write to each copy of this node's slot: a newer one waits for it (no out-of-order landing). */
  private readonly copyWrites: [Promise<boolean>, Promise<boolean>] = [Promise.resolve(true), Promise.resolve(true)];
  /**
   * The epoch this node's slot carries: the last it claimed (or its slot had at start). Epochs it
   * learns from partners are not written there: a claimer reading them back would take them for a
   * competing claim of the same epoch and give up, again at every epoch (ownership simulator,
   * three nodes, seed 262); a node starting meanwhile would fence survivors still at the old one.
   */
  private slotEpoch = 0;
  /** Told when this node's epoch rises (a claim begins, or a partner's epoch is adopted). */
  onEpoch: (epoch: number) => void = () => undefined;
  /** Told when a renewal ran late or slow: the warning that comes before a lease runs out. */
  onSlow: (what: string) => void = () => undefined;
  /**
   * Told true when a renewal has been in flight for LATE_FRACTION of the lease, false once a
   * renewal lands within that time again: the node paces its own member I/O meanwhile (disk-queue.ts).
   */
  onLate: (late: boolean) => void = () => undefined;
  private late = false;

  constructor(
    readonly slot: number,
    private readonly name: string,
    private readonly identity: ProcessIdentity,
    private readonly disk: LeaseDisk,
    private readonly clock: Clock,
    private readonly options: LeaseOptions,
  ) {}

  get leaseMs(): number {
    return this.options.leaseMs;
  }

  /** Reads every slot, takes the highest epoch seen as this node's, writes its own slot, starts renewing. */
  async acquire(): Promise<void> {
    const slots = await this.disk.readAll();
    this.observe(slots, this.clock.now());
    this.sequence = slots[this.slot]?.sequence ?? 0;
    this.epoch = Math.max(0, ...slots.map((lease) => lease?.epoch ?? 0));
    this.slotEpoch = slots[this.slot]?.epoch ?? 0;
    const started = this.clock.now();
    await this.renewOnce();
    if (this.lastFailure) throw new Error(`could not write this node's lease: ${this.lastFailure}`);
    this.renewing = true;
    // Counted from when that renewal started, like every later one: a slow first sync must not
    // leave a gap of its own length plus an interval.
    this.schedule(this.clock.now() - started);
  }

  /** This node may acknowledge writes and write the shared disks. */
  holds(): boolean {
    if (this.options.fencing === false) return !this.fenced;
    return !this.fenced && this.clock.now() < this.validUntil;
  }

  /** Milliseconds of lease left (negative once run out). */
  remainingMs(): number {
    return this.validUntil - this.clock.now();
  }

  /** The newest lease seen in a slot. */
  leaseOf(slot: number): Lease | null {
    return this.observed.get(slot)?.lease ?? null;
  }

  /**
   * Another node's lease no longer protects it: released at a clean stop, proven dead (same host,
   * process gone), never written, or not renewed for leaseMs as seen from here.
   */
  expired(slot: number): boolean {
    const seen = this.observed.get(slot);
    if (!seen) return false;
    if (!seen.lease || seen.lease.holder === '') return true;
    if (this.options.processGone(seen.lease) === true) return true;
    return this.clock.now() - seen.changedAt >= this.options.leaseMs;
  }

  /** Whether another node's lease is being renewed: it changed within the last leaseMs. */
  renewedWithin(slot: number, ms: number): boolean {
    const seen = this.observed.get(slot);
    return !!seen?.lease && seen.lease.holder !== '' && this.clock.now() - seen.changedAt < ms;
  }

  /**
   * A takeover of the nodes in `mustBeGone` (their leases expired as seen so far; the claim fails if
   * any of them renews before it is done): epoch = highest seen + 1 written to this node's slot; after a pause long enough for
   * a competitor's claim to land, a competitor with the same or a higher epoch and a lower node id
   * (or any higher epoch) wins and this claim fails. Resolves with the new epoch.
   */
  async claimEpoch(pauseMs: number, mustBeGone: readonly number[] = []): Promise<number> {
    // The caller decided from what it saw earlier; a node it took for gone may have renewed since.
    const lookedGone = new Set([...this.observed.keys()].filter((slot) => slot !== this.slot && this.expired(slot)));
    const stillLive = (): number | undefined => mustBeGone.find((slot) => slot !== this.slot && !this.expired(slot));
    await this.inFlight;
    const readAt = this.clock.now();
    const slots = await this.disk.readAll();
    this.observe(slots, this.clock.now());
    for (const slot of [...lookedGone, ...mustBeGone]) {
      const lease = this.observed.get(slot)?.lease;
      if (lease && slot !== this.slot && !this.expired(slot)) throw new ClaimLostError(`node ${lease.holder} renewed its lease after all (epoch ${lease.epoch})`);
    }
    // Any other lease still live could be a competitor claiming right now: give its claim time to
    // land (one renewal interval and a bit) before reading back, whatever the caller thought.
    const competitorPossible = slots.some((lease, slot) => slot !== this.slot && lease !== null && lease.holder !== '' && !this.expired(slot));
    const pause = competitorPossible ? Math.max(pauseMs, Math.floor(this.options.leaseMs / 4) + 1) : pauseMs;
    const claimed = Math.max(this.epoch, ...slots.map((lease) => lease?.epoch ?? 0)) + 1;
    this.epoch = claimed;
    this.slotEpoch = claimed;
    // Partners hear of it now, not once it is won: a node that starts meanwhile reads it from the
    // slots, and a survivor still at the old epoch would look stale to it (ownership simulator, seed 30).
    this.onEpoch(claimed);
    // The claim counts only if its own write landed: an earlier renewal keeping holds() true says
    // nothing about whether the new epoch is on the disks (found by the lease simulator, seed 147).
    const writeStarted = this.clock.now();
    if (!(await this.renewOnce()) || !this.holds()) throw new ClaimLostError(`could not write the claim of epoch ${claimed}: ${this.lastFailure || 'too late'}`);
    // A competitor's read-back after its own pause may have missed a claim that took longer than
    // that pause to land (lease simulator, seed 175): such a claim is given up.
    // Nor may a claim take long from its read to its landing at all: a node frozen in the middle of
    // a claim would land it after a competitor that could not see it has won (seed 6864).
    const writeMs = this.clock.now() - writeStarted;
    const claimMs = this.clock.now() - readAt;
    const windowMs = Math.floor(this.options.leaseMs / 4);
    if ((competitorPossible && writeMs > pause) || claimMs > windowMs) {
      throw new ClaimLostError(`the claim of epoch ${claimed} took ${Math.round(claimMs)} ms from read to write, longer than a competitor waits`);
    }
    await new Promise<void>((resolve) => this.clock.setTimer(pause, resolve));
    const after = await this.disk.readAll();
    this.observe(after, this.clock.now());
    after.forEach((lease, slot) => {
      if (!lease || slot === this.slot || lease.holder === '' || this.expired(slot)) return;
      if (lease.epoch > claimed || (lease.epoch === claimed && slot < this.slot)) {
        throw new ClaimLostError(`node ${lease.holder} claimed epoch ${lease.epoch} at the same time`);
      }
    });
    // The node taken over must still be gone after the pause: one that was only frozen (or whose
    // renewals this node missed while it was frozen itself) has renewed by now (seed 22332).
    const revived = stillLive();
    if (revived !== undefined) throw new ClaimLostError(`node ${this.observed.get(revived)?.lease?.holder ?? revived} renewed its lease during the claim`);
    // Frozen through the pause: the lease may have run out, and the claim with it (seed 10121).
    if (!this.holds()) throw new ClaimLostError(`this node's lease ran out during the claim of epoch ${claimed}`);
    return claimed;
  }


  /** Whether a partner's epoch could have come from claims (MAX_EPOCH_LEAD); links refuse the others. */
  plausibleEpoch(epoch: number): boolean {
    let highest = this.epoch;
    for (const seen of this.observed.values()) highest = Math.max(highest, seen.lease?.epoch ?? 0);
    return Number.isSafeInteger(epoch) && epoch >= 0 && epoch <= highest + MAX_EPOCH_LEAD;
  }

  /** A partner's takeover message told this node of a newer epoch: carry it from the next renewal on. */
  adoptEpoch(epoch: number): void {
    if (epoch <= this.epoch) return;
    if (!this.plausibleEpoch(epoch)) throw new Error(`epoch ${epoch} is further ahead than any claim could take it (highest seen ${this.epoch})`);
    this.epoch = epoch;
    this.onEpoch(epoch);
  }

  /** Stops renewing: the lease runs out by itself (a node cut off from the authority gives way). */
  yieldLease(reason: string): void {
    if (!this.renewing) return;
    this.renewing = false;
    this.cancelTimer?.();
    this.cancelTimer = null;
    const left = Math.max(0, this.remainingMs());
    this.clock.setTimer(left, () => this.fence(reason));
  }

  /** Stops renewing and, if this node still holds its lease, writes the slot as released. */
  async release(): Promise<void> {
    this.stopped = true;
    this.renewing = false;
    this.cancelTimer?.();
    await Promise.all(this.copyWrites);
    if (!this.holds()) return;
    this.sequence++;
    await this.disk.write({ ...this.record(), holder: '' }).catch(() => undefined);
  }

  /** Stops renewing without releasing (a fenced node must not write the disks at all). */
  abandon(): void {
    this.stopped = true;
    this.renewing = false;
    this.cancelTimer?.();
  }

  private fence(reason: string): void {
    if (this.fenced || this.stopped || this.options.fencing === false) return;
    this.fenced = true;
    this.renewing = false;
    this.cancelTimer?.();
    this.onFenced(reason);
  }

  private schedule(elapsedMs = 0): void {
    if (!this.renewing || this.stopped) return;
    const intervalMs = Math.max(1, Math.floor(this.options.leaseMs / 4) - elapsedMs);
    this.tickDueAt = this.clock.now() + intervalMs;
    this.cancelTimer = this.clock.setTimer(intervalMs, () => {
      this.cancelTimer = null;
      void this.tick();
    });
  }

  private async tick(): Promise<void> {
    if (!this.renewing || this.stopped) return;
    // A process frozen past its lease resumes here: another node may own its volumes by now, and a
    // renewal must not bring the lease back before the check below runs (ownership simulator, seed 15).
    if (!this.holds()) {
      this.fence(`this node's lease ran out (last renewal failed: ${this.lastFailure || 'too late'})`);
      return;
    }
    const late = this.clock.now() - this.tickDueAt;
    if (late > this.options.leaseMs / 4) this.onSlow(`lease renewal timer fired ${Math.round(late)} ms late (event loop blocked)`);
    // Renewals overlap (two at most, one per copy): a sync held up by other files' writeback then
    // costs one interval, not every interval after it. Measured here: a 3 s fdatasync of a lease
    // file while another process wrote 1 MiB blocks to the same disk.
    if (this.renewalsInFlight < RENEWALS_IN_FLIGHT_MAX) {
      this.renewalsInFlight++;
      const started = this.clock.now();
      void this.renewOnce().then(() => {
        this.renewalsInFlight--;
        const took = this.clock.now() - started;
        if (took > this.options.leaseMs / 4) this.onSlow(`lease renewal took ${Math.round(took)} ms (lease files slow to write and sync)`);
      });
    }
    try {
      this.observe(await this.disk.readAll(), this.clock.now());
    } catch {
      // An unreadable lease area counts as no news: the other leases age, ours is judged by its writes.
    }
    if (!this.holds()) {
      this.fence(`this node's lease ran out (last renewal failed: ${this.lastFailure || 'too late'})`);
      return;
    }
    for (const [slot, seen] of this.observed) {
      if (slot === this.slot || !seen.lease || seen.lease.holder === '' || this.expired(slot)) continue;
      if (seen.lease.epoch > this.epoch && !this.isLivePartner(slot)) {
        this.fence(`node ${seen.lease.holder} holds epoch ${seen.lease.epoch}, newer than this node's ${this.epoch}: it took over`);
        return;
      }
    }
    this.schedule();
  }

  /** One renewal; resolves true if its write landed. Writes to one copy of the slot never overlap. */
  private renewOnce(): Promise<boolean> {
    this.sequence++;
    const record = this.record();
    const copy = this.sequence % 2;
    const previous = this.copyWrites[copy];
    const work = (async () => {
      await previous;
      const started = this.clock.now();
      const lateMs = Math.max(1, Math.floor(this.options.leaseMs * LATE_FRACTION));
      const cancelLate = this.clock.setTimer(lateMs, () => {
        if (this.late) return;
        this.late = true;
        this.onLate(true);
      });
      const settled = (landed: boolean): void => {
        cancelLate();
        if (landed && this.late && this.clock.now() - started < lateMs) {
          this.late = false;
          this.onLate(false);
        }
      };
      try {
        await this.disk.write(record);
        this.lastFailure = '';
        // Only a write that raises the newest sequence on the disks is news to an observer: an
        // older one landing after a newer one (the other copy) renews nothing (lease simulator,
        // seed 5256). A renewal that took longer than the lease protects nothing either.
        settled(true);
        if (record.sequence <= this.highestLanded) return true;
        this.highestLanded = record.sequence;
        // Started after the lease had run out: the node is fenced, whatever lands (after acquire).
        if (this.renewing && started >= this.validUntil) return true;
        const until = started + this.options.leaseMs - this.marginMs();
        if (until > this.validUntil) this.validUntil = until;
        return true;
      } catch (error) {
        settled(false);
        this.lastFailure = (error as Error).message;
        return false;
      }
    })();
    this.copyWrites[copy] = work;
    this.inFlight = work;
    return work;
  }


  private marginMs(): number {
    return Math.floor(this.options.leaseMs / 4);
  }

  private record(): Lease {
    return {
      slot: this.slot,
      sequence: this.sequence,
      epoch: this.slotEpoch,
      expiresAtMs: Math.floor(this.clock.wallNow() + this.options.leaseMs),
      holder: this.name,
      ...this.identity,
    };
  }

  private observe(slots: Array<Lease | null>, now: number): void {
    slots.forEach((lease, slot) => {
      const seen = this.observed.get(slot);
      if (!seen || (seen.lease?.sequence ?? -1) !== (lease?.sequence ?? -1)) this.observed.set(slot, { lease, changedAt: now });
    });
  }
}
