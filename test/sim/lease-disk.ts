// The shared lease files as the simulations see them: two copies per slot (sequence parity, as on the
// real lease files), a read returns each slot's newest copy. A write lands at a random instant
// between its start and its completion (the kernel and the disks do it, so it lands even if its
// process is paused or dead), writes to one copy land in the order issued, and the completion is
// an event of the writing process. How long a write takes and whether it fails is the caller's draw.
import type { LeaseDisk } from '../../src/cluster/lease.js';
import type { Lease } from '../../src/storage/index.js';
import type { Actor, TimedWorld } from './timed-world.js';

export interface LeaseWriteDraw {
  latencyMs: number;
  /** The write reports failure… */
  fails: boolean;
  /** …and lands anyway (a failed write may have reached some of the files). */
  lands: boolean;
}

export class SimLeaseDisk {
  private readonly copies: Array<[Lease | null, Lease | null]>;
  private readonly lastLanding: number[] = [];

  constructor(
    private readonly world: TimedWorld,
    slots: number,
    private readonly random: () => number,
    private readonly draw: (writer: Actor, lease: Lease) => LeaseWriteDraw,
    private readonly note: (line: string) => void = () => undefined,
  ) {
    this.copies = Array.from({ length: slots }, () => [null, null]);
  }

  newest(slot: number): Lease | null {
    const [a, b] = this.copies[slot] as [Lease | null, Lease | null];
    const pick = !a ? b : !b ? a : a.sequence >= b.sequence ? a : b;
    return pick ? { ...pick } : null;
  }

  /** The LeaseDisk of one process; `self` is read at each call (the incarnation may be built after). */
  diskFor(self: () => Actor, name: () => string): LeaseDisk {
    const { world, random } = this;
    return {
      readAll: () =>
        new Promise((resolve) => {
          const me = self();
          world.schedule(random() * 3, null, `${name()} lease read lands`, () => {
            const snapshot = this.copies.map((_, slot) => this.newest(slot));
            world.schedule(0, me, `${name()} lease read done`, () => resolve(snapshot));
          });
        }),
      write: (lease) =>
        new Promise((resolve, reject) => {
          const me = self();
          const record = { ...lease };
          const { latencyMs, fails, lands } = this.draw(me, record);
          const copy = record.slot * 2 + (record.sequence % 2);
          const landAt = Math.max(world.now + random() * latencyMs, this.lastLanding[copy] ?? 0);
          this.lastLanding[copy] = landAt;
          if (lands || !fails) {
            world.schedule(landAt - world.now, null, `${name()} lease seq ${record.sequence} epoch ${record.epoch}${record.holder === '' ? ' (release)' : ''} lands`, () => {
              (this.copies[record.slot] as [Lease | null, Lease | null])[record.sequence % 2] = record;
            });
          }
          const doneIn = Math.max(latencyMs, landAt - world.now);
          if (doneIn > 100) this.note(`${name()} lease write seq ${record.sequence} takes ${doneIn.toFixed(0)} ms`);
          world.schedule(doneIn, me, `${name()} lease write seq ${record.sequence} ${fails ? 'fails' : 'done'}`, () =>
            fails ? reject(new Error('lease write failed on a majority of files')) : resolve(),
          );
        }),
    };
  }
}
