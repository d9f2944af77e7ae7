// Proves the member I/O queue: never more than its concurrency in flight, first come first served,
// and while paced (a lease renewal is late) one operation at a time, back to full when it ends.
import { expect } from 'chai';
import { DiskQueue } from '../../../src/storage/disk-queue.js';

/** Submits `count` operations that stay running until finished by hand; returns their finishers. */
function submitMany(queue: DiskQueue, count: number, started: number[]): Array<() => void> {
  const finishers: Array<() => void> = [];
  for (let index = 0; index < count; index++) {
    queue.submit(() => {
      started.push(index);
      finishers[index] = () => queue.done();
    });
  }
  return finishers;
}

describe('disk queue', () => {
  it('runs at most its concurrency at once, in the order submitted', () => {
    const queue = new DiskQueue(3);
    const started: number[] = [];
    const finish = submitMany(queue, 6, started);
    expect(started).to.deep.equal([0, 1, 2]);
    expect(queue.queued).to.equal(3);
    finish[1]?.();
    expect(started).to.deep.equal([0, 1, 2, 3]);
    finish[0]?.();
    finish[2]?.();
    expect(started).to.deep.equal([0, 1, 2, 3, 4, 5]);
  });

  it('paced, lets operations through one at a time after those running drain; unpaced, refills at once', () => {
    const queue = new DiskQueue(4);
    const started: number[] = [];
    const finish = submitMany(queue, 10, started);
    expect(started).to.deep.equal([0, 1, 2, 3]);
    queue.pace(true);
    expect(queue.paced).to.equal(true);
    finish[0]?.();
    finish[1]?.();
    finish[2]?.();
    expect(started, 'none starts while more than one runs').to.deep.equal([0, 1, 2, 3]);
    finish[3]?.();
    expect(started).to.deep.equal([0, 1, 2, 3, 4]);
    finish[4]?.();
    expect(started).to.deep.equal([0, 1, 2, 3, 4, 5]);
    queue.pace(false);
    expect(started).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(queue.queued).to.equal(1);
  });
});
