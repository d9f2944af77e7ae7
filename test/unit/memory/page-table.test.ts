// Proves the page table: a slot is a frame, installing a page resets every field of the slot's
// last page and counts a new generation, the replacement queue is first in first out with one
// second chance per use, removal unlinks from anywhere in it and hands the wait list back; and the
// memory manager over it keeps its resident pages out of the JavaScript heap.
import { expect } from 'chai';
import v8 from 'node:v8';
import vm from 'node:vm';
import { FRAME_BYTES, FramePool, MemoryManager } from '../../../src/memory/index.js';
import { NONE, PageTable } from '../../../src/memory/page-table.js';
import type { BlockStore } from '../../../src/storage/index.js';

function queueOf(table: PageTable): number[] {
  const slots: number[] = [];
  for (let slot = table.first(); slot !== NONE; slot = table.after(slot)) slots.push(slot);
  return slots;
}

describe('PageTable', () => {
  it('keeps a page in the slot of its frame, and a new page there starts from nothing', () => {
    const table = new PageTable(16 * FRAME_BYTES);
    const slot = table.install(3 * FRAME_BYTES, 7, 12345);
    expect(slot).to.equal(3);
    expect(table.frame(slot)).to.equal(3 * FRAME_BYTES);
    expect([table.owner[slot], table.virtualPage[slot], table.generation[slot]]).to.deep.equal([7, 12345, 1]);
    table.readers[slot] = 2;
    table.version[slot] = 9;
    table.setWriter(slot, true);
    table.setMirrored(slot, true);
    table.setQueuedForDestage(slot, true);
    table.setUnfilled(slot, true);
    table.setLoading(slot, Promise.resolve());
    table.remove(slot);
    expect(table.owner[slot]).to.equal(NONE);
    table.install(3 * FRAME_BYTES, 8, 1);
    expect([table.readers[slot], table.version[slot], table.cleanVersion[slot], table.generation[slot]]).to.deep.equal([0, 0, 0, 2]);
    expect([table.writer(slot), table.mirrored(slot), table.queuedForDestage(slot), table.unfilled(slot), table.loading(slot)]).to.deep.equal([false, false, false, false, null]);
    expect(table.readable(slot) && table.clean(slot) && table.idle(slot)).to.equal(true);
  });

  it('tells readable, clean and idle apart', () => {
    const table = new PageTable(4 * FRAME_BYTES);
    const slot = table.install(0, 0, 0);
    table.setWriter(slot, true);
    expect([table.readable(slot), table.idle(slot)]).to.deep.equal([false, false]);
    table.setWriter(slot, false);
    table.readers[slot] = 1;
    expect([table.readable(slot), table.idle(slot)]).to.deep.equal([true, false]);
    table.readers[slot] = 0;
    table.version[slot] = 2;
    expect(table.clean(slot)).to.equal(false);
    table.cleanVersion[slot] = 2;
    table.setQueuedForDestage(slot, true);
    expect(table.clean(slot)).to.equal(false);
    table.setQueuedForDestage(slot, false);
    table.setUnfilled(slot, true);
    expect([table.clean(slot), table.readable(slot)]).to.deep.equal([true, false]);
    table.setUnfilled(slot, false);
    const load = Promise.resolve();
    table.setLoading(slot, load);
    expect([table.loading(slot), table.readable(slot), table.idle(slot)]).to.deep.equal([load, false, false]);
    table.setLoading(slot, null);
    table.wait(slot, () => undefined);
    expect([table.readable(slot), table.idle(slot)]).to.deep.equal([true, false]);
    expect(table.takeWaiters(slot)).to.have.length(1);
    expect(table.idle(slot)).to.equal(true);
  });

  it('queues pages in order, each once, and unlinks them from the front, middle and back', () => {
    const table = new PageTable(8 * FRAME_BYTES);
    for (const slot of [5, 1, 7, 2]) table.enqueue(table.install(slot * FRAME_BYTES, 0, slot));
    table.enqueue(1);
    expect(queueOf(table)).to.deep.equal([5, 1, 7, 2]);
    table.dequeue(1);
    expect(queueOf(table)).to.deep.equal([5, 7, 2]);
    table.dequeue(5);
    table.dequeue(2);
    expect(queueOf(table)).to.deep.equal([7]);
    table.dequeue(7);
    table.dequeue(7);
    expect(queueOf(table)).to.deep.equal([]);
    table.enqueue(2);
    expect(queueOf(table)).to.deep.equal([2]);
  });

  it('gives a used page one second chance: to the back, unreferenced', () => {
    const table = new PageTable(4 * FRAME_BYTES);
    for (const slot of [0, 1, 2]) table.enqueue(table.install(slot * FRAME_BYTES, 0, slot));
    table.touch(0);
    expect(table.secondChance(0)).to.equal(true);
    expect(queueOf(table)).to.deep.equal([1, 2, 0]);
    expect(table.secondChance(0)).to.equal(false);
    expect(table.secondChance(1)).to.equal(false);
    expect(queueOf(table)).to.deep.equal([1, 2, 0]);
  });

  it('hands the wait list back when a page is removed, and leaves the queue whole', () => {
    const table = new PageTable(4 * FRAME_BYTES);
    for (const slot of [0, 1, 2]) table.enqueue(table.install(slot * FRAME_BYTES, 0, slot));
    let resumed = 0;
    table.wait(1, () => resumed++);
    table.wait(1, () => resumed++);
    for (const resume of table.remove(1) ?? []) resume();
    expect(resumed).to.equal(2);
    expect(queueOf(table)).to.deep.equal([0, 2]);
    expect(table.remove(1)).to.equal(undefined);
  });
});

describe('MemoryManager over the page table', () => {
  const zeroStore: BlockStore = {
    async readBlocks(_offset, into) {
      into.fill(0);
    },
    enqueueBlocks: () => undefined,
    async flush() {},
  };

  it('adds well under 100 bytes of JavaScript heap per resident 4 KiB page (a page object cost ~350)', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const poolBytes = 64 * 1024 * 1024;
    const pages = poolBytes / FRAME_BYTES;
    const partners = { livePartners: () => 1, writePage: async () => true, pageClean: () => undefined };
    const manager = new MemoryManager(new FramePool(poolBytes), zeroStore, partners, { highWatermarkPages: pages, lowWatermarkPages: 0 });
    const guid = '11111111-2222-4333-8444-555555555555';
    manager.createAllocation({ guid, arrayOffset: 0, sizeBytes: poolBytes, pageBytes: FRAME_BYTES });
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let page = 0; page < pages; page += 256) manager.prefetch(guid, page, 256);
    // Half of them written once, so dirty and queued for destage too.
    for (let page = 0; page < pages; page += 2) {
      const pointer = await manager.obtainWritePointer(guid, page);
      pointer.data[0] = 1;
      await manager.releasePointer(pointer, { offset: 0, length: 1 });
    }
    gc();
    const perPage = (process.memoryUsage().heapUsed - before) / pages;
    expect(manager.residentPages).to.equal(pages);
    expect(manager.dirtyPages).to.equal(pages / 2);
    expect(perPage).to.be.below(100);
  });
});
