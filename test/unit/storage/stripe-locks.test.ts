// Proves the keyed readers-writer locks: readers share, writers are alone, waiters are served in
// arrival order (a writer is not starved by later readers), and overlapping ranges go in call order.
import { expect } from 'chai';
import { StripeLocks } from '../../../src/storage/stripe-locks.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

describe('StripeLocks', () => {
  it('lets readers share and keeps a writer alone, in arrival order', async () => {
    const locks = new StripeLocks();
    const events: string[] = [];
    const first = gate();
    const r1 = locks.withShared(1, async () => {
      events.push('r1 in');
      await first.wait;
      events.push('r1 out');
    });
    const r2 = locks.withShared(1, async () => void events.push('r2'));
    const w = locks.withExclusive(1, async () => void events.push('w'));
    const r3 = locks.withShared(1, async () => void events.push('r3'));
    await tick();
    expect(events).to.deep.equal(['r1 in', 'r2']);
    first.open();
    await Promise.all([r1, r2, w, r3]);
    expect(events).to.deep.equal(['r1 in', 'r2', 'r1 out', 'w', 'r3']);
    expect(locks.lockedCount).to.equal(0);
  });

  it('does not block other keys', async () => {
    const locks = new StripeLocks();
    const held = gate();
    const slow = locks.withExclusive(1, () => held.wait);
    let ran = false;
    await locks.withExclusive(2, async () => void (ran = true));
    expect(ran).to.equal(true);
    held.open();
    await slow;
  });

  it('grants overlapping ranges in call order even when the later one could start first', async () => {
    const locks = new StripeLocks();
    const order: string[] = [];
    const held = gate();
    const blocker = locks.withExclusive(3, () => held.wait);
    const a = locks.withExclusiveRange(1, 5, async () => void order.push('a'));
    const b = locks.withExclusiveRange(4, 8, async () => void order.push('b'));
    await tick();
    expect(order, 'b waits behind a on 4 and 5').to.deep.equal([]);
    held.open();
    await Promise.all([blocker, a, b]);
    expect(order).to.deep.equal(['a', 'b']);
  });

  it('releases the lock when the work throws', async () => {
    const locks = new StripeLocks();
    await locks.withExclusive(1, async () => {
      throw new Error('boom');
    }).catch(() => undefined);
    expect(locks.lockedCount).to.equal(0);
    await locks.withExclusive(1, async () => undefined);
  });
});
