// eachInFlight: items start in order, never more than the limit at once, and a failure rejects.
import { expect } from 'chai';
import { eachInFlight } from '../../../src/core/index.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('eachInFlight', () => {
  it('starts the items in order with at most `limit` running', async () => {
    const started: number[] = [];
    let running = 0;
    let most = 0;
    await eachInFlight([...Array(10).keys()], 3, async (item) => {
      started.push(item);
      most = Math.max(most, ++running);
      for (let wait = 0; wait < 1 + (item % 4); wait++) await tick();
      running--;
    });
    expect(started).to.deep.equal([...Array(10).keys()]);
    expect(most).to.equal(3);
  });

  it('rejects with the first failure', async () => {
    const error = await eachInFlight([1, 2, 3], 2, async (item) => {
      await tick();
      if (item === 2) throw new Error(`item ${item} failed`);
    }).catch((caught: Error) => caught);
    expect((error as Error).message).to.equal('item 2 failed');
  });

  it('does nothing for no items', async () => {
    let calls = 0;
    await eachInFlight([], 4, async () => void calls++);
    expect(calls).to.equal(0);
  });
});
