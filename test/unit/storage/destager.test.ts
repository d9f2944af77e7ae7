// Proves the destager's rules: nothing is clean before its sync, newer data is never overwritten by
// older, watermarks start and stop background work, neighbours are merged, flushes share syncs, and a
// targeted flush (a write-through) overtakes a backlog without ever overtaking its own block's older write.
import { expect } from 'chai';
import { Destager, type DestageTarget } from '../../../src/storage/destager.js';

const B = 4096;

class FakeTarget implements DestageTarget {
  readonly disk = new Map<number, number>();
  readonly writes: Array<[number, number]> = [];
  syncs = 0;
  /** While set, writes wait for release(). */
  gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  failNext: Error | null = null;

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }
  release(): void {
    this.gate = null;
    this.open?.();
  }
  async write(offset: number, data: Buffer): Promise<void> {
    if (this.gate) await this.gate;
    if (this.failNext) {
      const error = this.failNext;
      this.failNext = null;
      throw error;
    }
    this.writes.push([offset, data.length]);
    for (let i = 0; i < data.length / B; i++) this.disk.set(offset / B + i, data[i * B] as number);
  }
  async sync(): Promise<void> {
    this.syncs++;
  }
}

const block = (value: number, count = 1): Buffer => Buffer.alloc(count * B, value);
const options = { highWatermarkBlocks: 8, lowWatermarkBlocks: 2, maxBatchBlocks: 4, maxConcurrentBatches: 2 };

describe('Destager', () => {
  it('keeps blocks dirty (and readable) below the high watermark until a flush', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    destager.enqueue(0, block(1, 3));
    await new Promise((resolve) => setImmediate(resolve));
    expect(target.writes).to.deep.equal([]);
    expect(destager.dirtyBlock(1)?.[0]).to.equal(1);
    await destager.flush();
    expect(destager.dirtyBlocks).to.equal(0);
    expect([...target.disk.values()]).to.deep.equal([1, 1, 1]);
    expect(target.writes).to.deep.equal([[0, 3 * B]]);
  });

  it('starts at the high watermark and stops at the low one', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, { ...options, maxBatchBlocks: 2, maxConcurrentBatches: 1 });
    for (let i = 0; i < 7; i++) destager.enqueue(i * 2 * B, block(i));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(target.writes, 'below the high watermark nothing moves').to.deep.equal([]);
    destager.enqueue(100 * B, block(8));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(destager.dirtyBlocks, 'drained down to the low watermark').to.equal(2);
    expect(target.syncs).to.equal(3);
  });

  it('marks clean only after the sync, and calls onClean with what was written', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    const cleaned: number[] = [];
    destager.onClean = (offset) => cleaned.push(offset);
    target.sync = async () => {
      expect(destager.dirtyBlocks, 'still dirty while syncing').to.equal(1);
      target.syncs++;
    };
    destager.enqueue(5 * B, block(9));
    await destager.flush();
    expect(cleaned).to.deep.equal([5 * B]);
    expect(target.syncs).to.equal(1);
  });

  it('never lets an older write of a block finish after a newer one is enqueued as clean', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    destager.enqueue(0, block(1));
    target.hold();
    const first = destager.flush();
    destager.enqueue(0, block(2));
    expect(destager.dirtyBlock(0)?.[0]).to.equal(2);
    target.release();
    await first;
    expect(destager.dirtyBlock(0)?.[0], 'the newer data is still dirty').to.equal(2);
    await destager.flush();
    expect(target.disk.get(0)).to.equal(2);
    expect(destager.dirtyBlocks).to.equal(0);
  });

  it('resolves a flush only once the write of what it covered landed, also when a newer enqueue replaced that block meanwhile', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, { ...options, maxBatchBlocks: 1 });
    // Two batches at once, each held at the disk: block 0 and block 10.
    const gates = new Map<number, () => void>();
    const held = (offset: number): Promise<void> => new Promise<void>((resolve) => gates.set(offset, resolve));
    const heldWrites = new Map([[0, held(0)], [10 * B, held(10 * B)]]);
    const write = target.write.bind(target);
    target.write = async (offset, data) => {
      await heldWrites.get(offset);
      return write(offset, data);
    };
    const first = block(1);
    destager.enqueue(0, first);
    destager.enqueue(10 * B, block(3));
    let flushed = false;
    const flushing = destager.flush().then(() => (flushed = true));
    await new Promise((resolve) => setImmediate(resolve));
    // A newer version of block 0 replaces the one on its way; then the other batch completes.
    destager.enqueue(0, block(2));
    gates.get(10 * B)?.();
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(target.disk.get(10), 'the other batch landed').to.equal(3);
    // The caller may reuse `first` once its flush resolved: the write still reading it must be done.
    expect(flushed, 'the write of the first data is still in flight').to.equal(false);
    gates.get(0)?.();
    await flushing;
    await destager.flush();
    expect(target.disk.get(0)).to.equal(2);
  });

  it('shares one sync among flushes that arrive while a batch runs (group commit)', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, { ...options, maxConcurrentBatches: 1, maxBatchBlocks: 100 });
    destager.enqueue(0, block(1));
    target.hold();
    const flushes = [destager.flush()];
    for (let i = 1; i <= 10; i++) {
      destager.enqueue(i * 10 * B, block(i));
      flushes.push(destager.flush());
    }
    target.release();
    await Promise.all(flushes);
    expect(target.syncs).to.equal(2);
  });

  it('reports a failed batch to flush and keeps the data dirty for a retry', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    destager.enqueue(0, block(7));
    target.failNext = new Error('member gone');
    const error = await destager.flush().catch((caught: Error) => caught);
    expect(error?.message).to.equal('member gone');
    expect(destager.dirtyBlock(0)?.[0]).to.equal(7);
    await destager.flush();
    expect(target.disk.get(0)).to.equal(7);
  });

  it('sends the blocks a targeted flush waits for ahead of a backlog, and resolves it before the backlog is clean', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, { ...options, maxConcurrentBatches: 1 });
    // The backlog's writes (blocks 100 and on) wait at the disk; others land at once.
    let openBacklog: () => void = () => undefined;
    const backlogGate = new Promise<void>((resolve) => (openBacklog = resolve));
    const write = target.write.bind(target);
    target.write = async (offset, data) => {
      if (offset >= 100 * B) await backlogGate;
      return write(offset, data);
    };
    destager.enqueue(100 * B, block(1, 20));
    let backlogClean = false;
    const backlog = destager.flush().then(() => (backlogClean = true));
    await new Promise((resolve) => setImmediate(resolve));
    destager.enqueue(5 * B, block(5));
    destager.enqueue(7 * B, block(7));
    await destager.flushBlocks(5 * B, B);
    expect(target.disk.get(5), 'the targeted block is on the disk').to.equal(5);
    expect(destager.dirtyBlock(5)).to.equal(undefined);
    expect(backlogClean, 'the backlog is still on its way').to.equal(false);
    expect(destager.dirtyBlocks, 'the backlog and the block nobody waits for are dirty').to.be.greaterThan(16);
    openBacklog();
    await backlog;
    expect(target.disk.get(119)).to.equal(1);
  });

  it('resolves a targeted flush only once the newest data of its block landed, after an older write of it in flight', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    destager.enqueue(0, block(1));
    target.hold();
    const first = destager.flush();
    await new Promise((resolve) => setImmediate(resolve));
    destager.enqueue(0, block(2));
    let done = false;
    const targeted = destager.flushBlocks(0, B).then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(done, 'the older write is still in flight').to.equal(false);
    target.release();
    await Promise.all([first, targeted]);
    expect(target.disk.get(0)).to.equal(2);
    expect(destager.dirtyBlocks).to.equal(0);
  });

  it('resolves a targeted flush only once the write it covered landed, also when a newer enqueue replaced that block meanwhile', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    // Writes of block 0 wait at the disk; others land at once (and wake every waiter as they do).
    let openBlock0: () => void = () => undefined;
    const block0Gate = new Promise<void>((resolve) => (openBlock0 = resolve));
    const write = target.write.bind(target);
    target.write = async (offset, data) => {
      if (offset === 0) await block0Gate;
      return write(offset, data);
    };
    destager.enqueue(0, block(1));
    let done = false;
    const targeted = destager.flushBlocks(0, B).then(() => (done = true));
    await new Promise((resolve) => setImmediate(resolve));
    // The caller may reuse its buffer once the flush resolved: the write still reading it must be done.
    destager.enqueue(0, block(2));
    destager.enqueue(9 * B, block(9));
    await destager.flushBlocks(9 * B, B);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(done, 'the write of the first data is still in flight').to.equal(false);
    openBlock0();
    await targeted;
    await destager.flushBlocks(0, B);
    expect(target.disk.get(0)).to.equal(2);
  });

  it('rejects a targeted flush whose block failed and keeps it dirty', async () => {
    const target = new FakeTarget();
    const destager = new Destager(target, options);
    destager.enqueue(3 * B, block(3));
    target.failNext = new Error('member gone');
    const error = await destager.flushBlocks(3 * B, B).catch((caught: Error) => caught);
    expect(error?.message).to.equal('member gone');
    expect(destager.dirtyBlock(3)?.[0]).to.equal(3);
    await destager.flushBlocks(3 * B, B);
    expect(target.disk.get(3)).to.equal(3);
  });

  it('hands a target that takes runs the whole batch at once, merged neighbours as runs, then syncs once', async () => {
    const target = new FakeTarget();
    const calls: Array<{ runs: Array<[number, number]>; inFlight: number }> = [];
    (target as DestageTarget).writeRuns = async (runs, inFlight) => {
      calls.push({ runs: runs.map((run) => [run.offset / B, run.data.length / B]), inFlight });
      for (const run of runs) await target.write(run.offset, run.data);
    };
    const destager = new Destager(target, options);
    destager.enqueue(5 * B, block(5));
    destager.enqueue(0, block(1, 2));
    destager.enqueue(9 * B, block(9));
    await destager.flush();
    expect(calls).to.have.length(1);
    expect(calls[0]?.runs).to.deep.equal([
      [0, 2],
      [5, 1],
      [9, 1],
    ]);
    expect(calls[0]?.inFlight).to.be.greaterThan(0);
    expect(target.syncs).to.equal(1);
    expect(destager.dirtyBlock(9)).to.equal(undefined);
  });

  it('refuses watermarks that do not make sense', () => {
    expect(() => new Destager(new FakeTarget(), { ...options, lowWatermarkBlocks: 9 })).to.throw(/low < high/);
  });
});
