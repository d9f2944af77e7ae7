// Proves the lease rules with an injected clock and disk: a node holds its lease only until
// renewal start + leaseMs − margin, another's lease expires only after leaseMs without a change seen
// here (or at once when released or proven dead), a failing disk fences, a newer epoch from a node
// that is not a live partner fences, and competing claims leave exactly one winner.
import type { Clock } from '../../../src/core/index.js';
import { expect } from 'chai';
import { ClaimLostError, LeaseKeeper, type LeaseDisk } from '../../../src/cluster/lease.js';
import type { Lease } from '../../../src/storage/index.js';

class FakeClock implements Clock {
  time = 0;
  private timers: Array<{ at: number; work: () => void }> = [];
  now(): number {
    return this.time;
  }
  wallNow(): number {
    return 1_700_000_000_000 + this.time;
  }
  setTimer(ms: number, work: () => void): () => void {
    const timer = { at: this.time + ms, work };
    this.timers.push(timer);
    return () => (this.timers = this.timers.filter((entry) => entry !== timer));
  }
  defer(work: () => void): void {
    setImmediate(work);
  }
  /** Advances time in small steps, running due timers and letting promises settle between them. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    while (this.time < end) {
      this.time = Math.min(end, this.time + 10);
      const due = this.timers.filter((timer) => timer.at <= this.time);
      this.timers = this.timers.filter((timer) => timer.at > this.time);
      for (const timer of due) timer.work();
      for (let i = 0; i < 20; i++) await Promise.resolve();
    }
  }
}

class SharedDisk {
  slots: Array<Lease | null> = Array.from({ length: 16 }, () => null);
  failing = new Set<number>();
  /** Reads take this long on `clock` (writes are instant): a renewal lands before its read returns. */
  readDelay: { clock: FakeClock; ms: number } | null = null;
  view(slot: number): LeaseDisk {
    return {
      readAll: async () => {
        const delay = this.readDelay;
        if (delay) await new Promise<void>((resolve) => delay.clock.setTimer(delay.ms, resolve));
        return this.slots.map((lease) => (lease ? { ...lease } : null));
      },
      write: async (lease) => {
        if (this.failing.has(slot)) throw new Error('disk gone');
        this.slots[lease.slot] = { ...lease };
      },
    };
  }
}

const identity = { pid: 1, processStart: 1, host: 'h' };

/** Steps the clock until `predicate` holds; returns that time. */
async function firstTime(clock: FakeClock, predicate: () => boolean, limitMs = 10_000): Promise<number> {
  const end = clock.time + limitMs;
  while (!predicate()) {
    if (clock.time >= end) throw new Error('never happened');
    await clock.advance(10);
  }
  return clock.time;
}
const LEASE_MS = 1000;

function keeper(disk: SharedDisk, clock: FakeClock, slot: number, gone: (lease: Lease) => boolean | null = () => null): LeaseKeeper {
  return new LeaseKeeper(slot, `n${slot}`, identity, disk.view(slot), clock, { leaseMs: LEASE_MS, processGone: gone });
}

/** One keeper in slot 0, acquired; `fenced()` is the reason it was fenced ('' while not). */
async function oneKeeper(): Promise<{ disk: SharedDisk; clock: FakeClock; a: LeaseKeeper; fenced: () => string }> {
  const disk = new SharedDisk();
  const clock = new FakeClock();
  const a = keeper(disk, clock, 0);
  let reason = '';
  a.onFenced = (why) => (reason = why);
  await a.acquire();
  return { disk, clock, a, fenced: () => reason };
}

describe('lease keeper', () => {
  it('holds its lease while renewing; another node sees it live, then expired leaseMs after its last renewal', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const a = keeper(disk, clock, 0);
    const b = keeper(disk, clock, 1);
    await a.acquire();
    await b.acquire();
    await clock.advance(3000);
    expect(a.holds()).to.equal(true);
    expect(b.expired(0)).to.equal(false);
    a.abandon(); // a hangs: no more renewals
    const stoppedAt = clock.time;
    const aStops = await firstTime(clock, () => !a.holds());
    const bSeesExpiry = await firstTime(clock, () => b.expired(0));
    expect(aStops, 'a must stop before b may take over').to.be.lessThan(bSeesExpiry);
    expect(bSeesExpiry - stoppedAt).to.be.at.least(LEASE_MS - 250);
    expect(bSeesExpiry - stoppedAt).to.be.at.most(LEASE_MS + 300);
  });

  it('a released slot, a never written slot and a proven-dead process count as expired at once', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const a = keeper(disk, clock, 0);
    await a.acquire();
    const observer = keeper(disk, clock, 1, (lease) => lease.slot === 2);
    disk.slots[2] = { slot: 2, sequence: 5, epoch: 0, expiresAtMs: 0, holder: 'n2', pid: 9, processStart: 9, host: 'h' };
    await observer.acquire();
    expect([observer.expired(0), observer.expired(2), observer.expired(3)]).to.deep.equal([false, true, true]);
    await a.release();
    await clock.advance(300);
    expect(observer.expired(0)).to.equal(true);
  });

  it('a node whose lease writes fail is fenced before its lease could be considered expired elsewhere', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const a = keeper(disk, clock, 0);
    const b = keeper(disk, clock, 1);
    let fencedAt = -1;
    a.onFenced = () => (fencedAt = clock.time);
    await a.acquire();
    await b.acquire();
    await clock.advance(1000);
    disk.failing.add(0);
    const aStops = await firstTime(clock, () => !a.holds());
    const bSeesExpiry = await firstTime(clock, () => b.expired(0));
    await clock.advance(500);
    expect(fencedAt, 'fenced').to.be.greaterThan(0);
    expect(aStops).to.be.lessThan(bSeesExpiry);
    expect(fencedAt).to.be.at.most(bSeesExpiry);
  });

  it('a newer epoch in the slot of a node that is not a live partner fences; one from a live partner does not', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const a = keeper(disk, clock, 0);
    const b = keeper(disk, clock, 1);
    const reasons: string[] = [];
    a.onFenced = (reason) => reasons.push(reason);
    await a.acquire();
    await b.acquire();
    let partnerLive = true;
    a.isLivePartner = () => partnerLive;
    const claim = b.claimEpoch(0);
    await clock.advance(600);
    expect(await claim).to.equal(1);
    expect(reasons).to.deep.equal([]);
    partnerLive = false;
    await clock.advance(600);
    expect(reasons).to.have.length(1);
    expect(reasons[0]).to.match(/holds epoch 1, newer than this node's 0/);
  });

  it('two simultaneous claims: the lower node id wins, the other fails', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const a = keeper(disk, clock, 0);
    const b = keeper(disk, clock, 1);
    await a.acquire();
    await b.acquire();
    await clock.advance(300); // both have seen each other renew
    const claims = [a.claimEpoch(250), b.claimEpoch(250)];
    await clock.advance(400);
    const [first, second] = await Promise.allSettled(claims);
    expect(first.status).to.equal('fulfilled');
    expect(second.status).to.equal('rejected');
    expect((second as PromiseRejectedResult).reason).to.be.instanceOf(ClaimLostError);
    expect((first as PromiseFulfilledResult<number>).value).to.equal(1);
  });

  it('renewals overlap: a lease disk that takes 400 ms per synced write (leaseMs 1000; one renewal at a time would lapse) keeps the lease', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const base = disk.view(0);
    const slow: LeaseDisk = {
      readAll: () => base.readAll(),
      write: async (lease) => {
        await new Promise<void>((resolve) => clock.setTimer(400, resolve));
        await base.write(lease);
      },
    };
    const a = new LeaseKeeper(0, 'n0', identity, slow, clock, { leaseMs: LEASE_MS, processGone: () => null });
    let fenced = '';
    a.onFenced = (reason) => (fenced = reason);
    const acquired = a.acquire();
    await clock.advance(700);
    await acquired;
    // The start-up renewal is awaited alone; from the second on they overlap.
    await clock.advance(500);
    let lapses = 0;
    for (let step = 0; step < 400; step++) {
      await clock.advance(10);
      if (!a.holds()) lapses++;
    }
    expect([fenced, lapses]).to.deep.equal(['', 0]);
  });

  it('a process frozen past its lease resumes fenced: the renewal due at resume does not bring the lease back', async () => {
    const { disk, clock, a, fenced } = await oneKeeper();
    await clock.advance(600);
    expect(a.holds()).to.equal(true);
    // SIGSTOP for two leases: time runs on, no timer of this process fires.
    clock.time += 2 * LEASE_MS;
    disk.readDelay = { clock, ms: 30 };
    expect(a.holds(), 'run out while frozen').to.equal(false);
    await clock.advance(50);
    expect(fenced()).to.match(/lease ran out/);
    expect(a.holds(), 'still run out after the renewal that was due').to.equal(false);
  });

  it('without fencing (a one-node cluster) a failing lease disk never stops the node', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const alone = new LeaseKeeper(0, 'n0', identity, disk.view(0), clock, { leaseMs: LEASE_MS, processGone: () => null, fencing: false });
    let fenced = false;
    alone.onFenced = () => (fenced = true);
    await alone.acquire();
    disk.failing.add(0);
    await clock.advance(5 * LEASE_MS);
    expect([alone.holds(), fenced]).to.deep.equal([true, false]);
  });

  it('says a renewal is late once one has been in flight a quarter lease, and on time again when one lands within that', async () => {
    const disk = new SharedDisk();
    const clock = new FakeClock();
    const base = disk.view(0);
    let writeMs = 20;
    const variable: LeaseDisk = {
      readAll: () => base.readAll(),
      write: async (lease) => {
        await new Promise<void>((resolve) => clock.setTimer(writeMs, resolve));
        await base.write(lease);
      },
    };
    const a = new LeaseKeeper(0, 'n0', identity, variable, clock, { leaseMs: LEASE_MS, processGone: () => null });
    const told: Array<[number, boolean]> = [];
    a.onLate = (late) => told.push([clock.time, late]);
    const acquired = a.acquire();
    await clock.advance(100);
    await acquired;
    await clock.advance(1000);
    expect(told, 'quick renewals are never late').to.deep.equal([]);
    writeMs = 400;
    await clock.advance(1500);
    writeMs = 20;
    await clock.advance(1500);
    expect(told.map(([, late]) => late)).to.deep.equal([true, false]);
    const [[lateAt], [onTimeAt]] = told as [[number, boolean], [number, boolean]];
    expect(onTimeAt - lateAt).to.be.greaterThan(100);
    expect(a.holds()).to.equal(true);
  });

  it('giving way stops renewals and fences once the lease has run out', async () => {
    const { disk, clock, a, fenced } = await oneKeeper();
    await clock.advance(500);
    a.yieldLease('cut off');
    const sequence = disk.slots[0]?.sequence;
    await clock.advance(LEASE_MS);
    expect(disk.slots[0]?.sequence, 'renewed after giving way').to.equal(sequence);
    expect(fenced()).to.equal('cut off');
    expect(a.holds()).to.equal(false);
  });
});
