// Proves the memory manager's rules with a fake store and fake partners: reads share a page and a
// write has it alone; a release with a change waits for the partners (or, without any, for the
// disks); the whole page goes to a partner first, then only ranges; a full pool parks requests
// until a page can be replaced; page clean follows a destage; a run of pages is one replication
// (whole end pages for a partner that lacks them), and MemoryVolume sends a long write as runs.
import { expect } from 'chai';
import { FramePool, MAX_RUN_BYTES, MemoryManager, MemoryVolume, PREFETCH_BRIDGE_BYTES, type MemoryManagerOptions, type PageWrite, type Replicator } from '../../../src/memory/index.js';
import type { BlockStore } from '../../../src/storage/index.js';
import { ManualClock } from '../../support/manual-clock.js';

const PAGE = 64 * 1024;
const GUID = '11111111-2222-4333-8444-555555555555';
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

class FakeStore implements BlockStore {
  readonly disk = Buffer.alloc(16 * PAGE);
  pending: Array<[number, Buffer]> = [];
  flushes = 0;
  flushBlocks?: (offset: number, length: number) => Promise<void>;
  readKnown?: (offset: number, into: Buffer) => boolean;
  async readBlocks(offset: number, into: Buffer): Promise<void> {
    this.disk.copy(into, 0, offset, offset + into.length);
  }
  enqueueBlocks(offset: number, data: Buffer): void {
    this.pending.push([offset, data]);
  }
  async flush(): Promise<void> {
    this.flushes++;
    for (const [offset, data] of this.pending.splice(0)) data.copy(this.disk, offset);
  }
}

/** Partners that take each run in one message, as LinkReplicator does. */
class FakePartners implements Replicator {
  live = 1;
  writes: Array<{ virtualPage: number; offset: number; length: number; version: number; pieces: number; bytes: Buffer }> = [];
  cleans: Array<[number, number]> = [];
  hold: Promise<void> | null = null;
  accept = true;
  livePartners(): number {
    return this.live;
  }
  async writePage(write: PageWrite): Promise<boolean> {
    this.writes.push({ virtualPage: write.virtualPage, offset: write.offset, length: write.length, version: write.version, pieces: write.data.length, bytes: Buffer.concat(write.data) });
    if (this.hold) await this.hold;
    return this.accept;
  }
  pageClean(_allocation: string, virtualPage: number, version: number, pageCount = 1): void {
    for (let index = 0; index < pageCount; index++) this.cleans.push([virtualPage + index, version]);
  }
}

function setup(poolBytes = 4 * 1024 * 1024, high = 100): { manager: MemoryManager; store: FakeStore; partners: FakePartners } {
  const store = new FakeStore();
  const partners = new FakePartners();
  const manager = new MemoryManager(new FramePool(poolBytes), store, partners, { highWatermarkPages: high, lowWatermarkPages: 0 });
  manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 16 * PAGE, pageBytes: PAGE });
  return { manager, store, partners };
}

/** A manager whose disk holds page number + 1 in every byte of each page, and the reads of that disk as [first page, pages]. */
function setupCountingReads(): ReturnType<typeof setup> & { reads: Array<[number, number]> } {
  const parts = setup();
  const { store } = parts;
  for (let page = 0; page < 16; page++) store.disk.fill(page + 1, page * PAGE, (page + 1) * PAGE);
  const reads: Array<[number, number]> = [];
  const read = store.readBlocks.bind(store);
  store.readBlocks = async (offset, into) => {
    reads.push([offset / PAGE, into.length / PAGE]);
    return read(offset, into);
  };
  return { ...parts, reads };
}

/** A manager of 8192 pages of 4 KiB (no watermark unless given); the store's enqueues recorded as page numbers. */
function smallPages(options: Partial<MemoryManagerOptions> = {}): { manager: MemoryManager; store: FakeStore; order: number[]; write: (page: number) => Promise<void> } {
  const small = 4096;
  const store = new FakeStore();
  const manager = new MemoryManager(new FramePool(64 * 1024 * 1024), store, new FakePartners(), { highWatermarkPages: 1 << 20, lowWatermarkPages: 0, ...options });
  manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 8192 * small, pageBytes: small });
  const order: number[] = [];
  store.enqueueBlocks = (offset) => void order.push(offset / small);
  const write = async (page: number): Promise<void> => {
    const pointer = manager.tryObtainWritePointer(GUID, page, false) ?? (await manager.obtainWritePointer(GUID, page, false));
    pointer.data.fill(1);
    await manager.releasePointer(pointer, { offset: 0, length: small });
  };
  return { manager, store, order, write };
}

describe('MemoryManager', () => {
  it('lets readers share a page and makes a writer wait for them', async () => {
    const { manager } = setup();
    const first = await manager.obtainReadPointer(GUID, 0);
    const second = await manager.obtainReadPointer(GUID, 0);
    let written = false;
    const writer = manager.obtainWritePointer(GUID, 0).then((pointer) => {
      written = true;
      return pointer;
    });
    await tick();
    expect(written).to.equal(false);
    await manager.releasePointer(first);
    await tick();
    expect(written, 'one reader still holds it').to.equal(false);
    await manager.releasePointer(second);
    await manager.releasePointer(await writer);
    expect(written).to.equal(true);
  });

  it('pages in from the store, and a whole-page overwrite does not', async () => {
    const { manager, store } = setup();
    store.disk.fill(9, 0, PAGE);
    const read = await manager.obtainReadPointer(GUID, 0);
    expect(read.data[100]).to.equal(9);
    await manager.releasePointer(read);
    store.disk.fill(5, PAGE, 2 * PAGE);
    const write = await manager.obtainWritePointer(GUID, 1, false);
    write.data.fill(1);
    await manager.releasePointer(write, { offset: 0, length: PAGE });
    const again = await manager.obtainReadPointer(GUID, 1);
    expect(again.data[0]).to.equal(1);
    await manager.releasePointer(again);
  });

  it('takes a page whose bytes the store knows without I/O (never written) from readKnown, and reads the others', async () => {
    const { manager, store, reads } = setupCountingReads();
    const known = new Set([3 * PAGE]);
    store.readKnown = (offset, into) => {
      if (!known.has(offset) || into.length !== PAGE) return false;
      into.fill(0x5a);
      return true;
    };
    const fromTable = await manager.obtainReadPointer(GUID, 3);
    expect([fromTable.data[0], fromTable.data[PAGE - 1]], 'what readKnown filled, not the disk (4)').to.deep.equal([0x5a, 0x5a]);
    await manager.releasePointer(fromTable);
    const read = await manager.obtainReadPointer(GUID, 5);
    expect(read.data[0]).to.equal(6);
    await manager.releasePointer(read);
    const write = await manager.obtainWritePointer(GUID, 3);
    expect(write.data[7], 'resident now').to.equal(0x5a);
    await manager.releasePointer(write);
    expect(reads, 'only page 5 was read').to.deep.equal([[5, 1]]);
  });

  it('copies a page that is not resident in the same step when the store knows its bytes, installing it clean; leaves everything as it was when it does not', async () => {
    const { manager, store, reads } = setupCountingReads();
    store.readKnown = (offset, into) => {
      if (offset !== 6 * PAGE) return false;
      into.fill(0x33);
      return true;
    };
    const pool = (manager as unknown as { pool: FramePool }).pool;
    const freeBefore = pool.freeBytes;
    const into = Buffer.alloc(100, 0xff);
    expect(manager.copyResident(GUID, 7, 0, 100, into, 0), 'page 7 is not known').to.equal(false);
    expect(into.every((byte) => byte === 0xff)).to.equal(true);
    expect(pool.freeBytes, 'no frame kept for it').to.equal(freeBefore);
    expect(manager.copyResident(GUID, 6, 10, 100, into, 0)).to.equal(true);
    expect(into.every((byte) => byte === 0x33)).to.equal(true);
    expect(pool.freeBytes, 'page 6 holds a frame now').to.equal(freeBefore - PAGE);
    const pointer = await manager.obtainReadPointer(GUID, 6);
    expect(pointer.data[PAGE - 1], 'resident, not read from the disk (7)').to.equal(0x33);
    await manager.releasePointer(pointer);
    const write = await manager.obtainWritePointer(GUID, 6);
    await manager.releasePointer(write);
    expect(reads, 'nothing was read').to.deep.equal([]);
  });

  it('returns from a modifying release only after the partner holds it; whole page first, then the range', async () => {
    const { manager, partners } = setup();
    let open!: () => void;
    partners.hold = new Promise((resolve) => (open = resolve));
    const pointer = await manager.obtainWritePointer(GUID, 2);
    pointer.data.fill(7, 10, 20);
    let released = false;
    const release = manager.releasePointer(pointer, { offset: 10, length: 10 }).then(() => (released = true));
    await tick();
    expect(released, 'waiting for the partner').to.equal(false);
    open();
    await release;
    partners.hold = null;
    const next = await manager.obtainWritePointer(GUID, 2);
    next.data.fill(8, 30, 34);
    await manager.releasePointer(next, { offset: 30, length: 4 });
    expect(partners.writes.map((write) => [write.offset, write.length, write.version])).to.deep.equal([
      [0, PAGE, 1],
      [30, 4, 2],
    ]);
    expect(partners.writes[1]?.bytes.every((byte) => byte === 8)).to.equal(true);
  });

  it('goes write-through with no partner, or when a partner cannot take the page', async () => {
    const { manager, store, partners } = setup();
    partners.live = 0;
    const pointer = await manager.obtainWritePointer(GUID, 3);
    pointer.data.fill(4, 0, 8);
    await manager.releasePointer(pointer, { offset: 0, length: 8 });
    expect(store.disk[3 * PAGE]).to.equal(4);
    partners.live = 1;
    partners.accept = false;
    const refused = await manager.obtainWritePointer(GUID, 4);
    refused.data.fill(6, 0, 8);
    await manager.releasePointer(refused, { offset: 0, length: 8 });
    expect(store.disk[4 * PAGE], 'on the disks although the partner refused').to.equal(6);
  });

  it('acknowledges a write-through once its own blocks are on the disks, not after a backlog of mirrored pages', async () => {
    const { manager, store, partners } = setup();
    for (const page of [1, 2]) {
      const pointer = await manager.obtainWritePointer(GUID, page);
      pointer.data.fill(page, 0, 16);
      await manager.releasePointer(pointer, { offset: 0, length: 16 });
    }
    // The store writes a targeted range at once; a whole flush (the backlog) waits at the disk.
    let openBacklog: () => void = () => undefined;
    const backlogGate = new Promise<void>((resolve) => (openBacklog = resolve));
    const targeted: Array<[number, number]> = [];
    store.flush = async () => {
      await backlogGate;
      for (const [offset, data] of store.pending.splice(0)) data.copy(store.disk, offset);
    };
    store.flushBlocks = async (offset: number, length: number) => {
      targeted.push([offset, length]);
      store.pending = store.pending.filter(([at, data]) => {
        if (at < offset || at >= offset + length) return true;
        data.copy(store.disk, at);
        return false;
      });
    };
    partners.live = 0;
    manager.partnerLost();
    const pointer = await manager.obtainWritePointer(GUID, 3);
    pointer.data.fill(3, 0, 8);
    const written = manager.releasePointer(pointer, { offset: 0, length: 8 });
    const first = await Promise.race([written.then(() => 'acknowledged'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 200))]);
    expect(first).to.equal('acknowledged');
    expect(targeted).to.deep.equal([[3 * PAGE, PAGE]]);
    expect(store.disk[3 * PAGE]).to.equal(3);
    expect(store.disk[1 * PAGE], 'the backlog is still on its way').to.equal(0);
    openBacklog();
    await manager.flush();
    expect(store.disk[1 * PAGE]).to.equal(1);
    expect(store.disk[2 * PAGE]).to.equal(2);
  });

  it('destages behind the partner and sends page clean with the destaged version', async () => {
    const { manager, store, partners } = setup();
    for (const page of [5, 6]) {
      const pointer = await manager.obtainWritePointer(GUID, page);
      pointer.data.fill(page, 0, 16);
      await manager.releasePointer(pointer, { offset: 0, length: 16 });
    }
    expect(store.disk[5 * PAGE], 'write-back: not on the disks yet').to.equal(0);
    expect(manager.dirtyPages).to.equal(2);
    await manager.flush();
    expect(store.disk[5 * PAGE]).to.equal(5);
    // Versions come from one clock for all pages, so a page paged in again never reuses one.
    expect(partners.cleans).to.deep.equal([
      [5, 1],
      [6, 2],
    ]);
  });

  it('parks a request while the pool is full and serves it once a page can be replaced', async () => {
    const { manager } = setup(1024 * 1024);
    // A 1 MiB pool holds 16 pages of 64 KiB: all locked, so a 17th page must wait for a frame.
    const pointers = [];
    for (let page = 0; page < 16; page++) pointers.push(await manager.obtainReadPointer(GUID, page));
    const other = '99999999-2222-4333-8444-555555555555';
    manager.createAllocation({ guid: other, arrayOffset: 0, sizeBytes: PAGE, pageBytes: PAGE });
    let served = false;
    const waiting = manager.obtainReadPointer(other, 0).then((pointer) => {
      served = true;
      return pointer;
    });
    await tick();
    expect(served).to.equal(false);
    await manager.releasePointer(pointers[0] as (typeof pointers)[number]);
    await manager.releasePointer(await waiting);
    expect(served).to.equal(true);
    expect(manager.residentPages).to.equal(16);
    for (const pointer of pointers.slice(1)) await manager.releasePointer(pointer);
  });

  it('replaces the page used longest ago: a page read since it was queued gets a second chance, and a pool of used pages still frees one', async () => {
    const { manager } = setup(1024 * 1024);
    // 16 clean, unlocked pages fill the 1 MiB pool, queued in the order 0 … 15.
    for (let page = 0; page < 16; page++) await manager.releasePointer(await manager.obtainReadPointer(GUID, page));
    const probe = Buffer.alloc(1);
    expect(manager.copyResident(GUID, 0, 0, 1, probe, 0), 'page 0 is resident (and now used again)').to.equal(true);
    const other = '99999999-2222-4333-8444-555555555555';
    manager.createAllocation({ guid: other, arrayOffset: 0, sizeBytes: 2 * PAGE, pageBytes: PAGE });
    await manager.releasePointer(await manager.obtainReadPointer(other, 0));
    expect(manager.copyResident(GUID, 1, 0, 1, probe, 0), 'page 1, unused since it came in, was replaced').to.equal(false);
    expect(manager.copyResident(GUID, 0, 0, 1, probe, 0), 'page 0 was used again: it stayed').to.equal(true);
    // Every queued page used again: replacement passes them all once, then takes the first.
    for (let page = 2; page < 16; page++) expect(manager.copyResident(GUID, page, 0, 1, probe, 0)).to.equal(true);
    expect(manager.copyResident(other, 0, 0, 1, probe, 0)).to.equal(true);
    await manager.releasePointer(await manager.obtainReadPointer(other, 1));
    expect(manager.residentPages).to.equal(16);
    expect(manager.copyResident(GUID, 2, 0, 1, probe, 0), 'page 2 was first in the queue after the pass').to.equal(false);
    expect(manager.copyResident(GUID, 0, 0, 1, probe, 0)).to.equal(true);
  });

  it('lends resident pages without a copy: all or nothing, and a writer waits until they are unpinned', async () => {
    const { manager, store } = setup();
    for (let page = 0; page < 16; page++) store.disk.fill(page + 1, page * PAGE, (page + 1) * PAGE);
    for (const page of [0, 1, 2, 7, 6]) await manager.releasePointer(await manager.obtainReadPointer(GUID, page));
    // Pages 0–2 came in one after another: one view over their frames, from byte 100 of page 0.
    const pieces = manager.pinResident(GUID, 0, 100, 2 * PAGE) as Buffer[];
    expect(pieces).to.have.length(1);
    expect(Buffer.concat(pieces).equals(store.disk.subarray(100, 100 + 2 * PAGE))).to.equal(true);
    let written = false;
    const writer = manager.obtainWritePointer(GUID, 1).then((pointer) => {
      written = true;
      return pointer;
    });
    await tick();
    expect(written, 'a writer waits for the lent page').to.equal(false);
    manager.unpinResident(GUID, 0, 3);
    const pointer = await writer;
    // A write-locked page is not lent, and nothing else of the range is locked by the attempt.
    expect(manager.pinResident(GUID, 0, 0, 2 * PAGE)).to.equal(null);
    expect(manager.tryObtainWritePointer(GUID, 0)).to.not.equal(null);
    await manager.releasePointer(pointer);
    // A page not resident (page 3): null. Pages 6 and 7, taken in the other order: the bytes in order.
    expect(manager.pinResident(GUID, 2, 0, 2 * PAGE)).to.equal(null);
    const scattered = manager.pinResident(GUID, 6, 0, 2 * PAGE) as Buffer[];
    expect(Buffer.concat(scattered).equals(store.disk.subarray(6 * PAGE, 8 * PAGE))).to.equal(true);
    manager.unpinResident(GUID, 6, 2);
    expect(() => manager.pinResident(GUID, 15, 0, 2 * PAGE)).to.throw(RangeError);
    // MemoryVolume lends or says no; it never throws into the NBD connection's request path.
    const volume = new MemoryVolume(manager, 'v', GUID, PAGE, 16 * PAGE);
    const lent = volume.pinRead(6 * PAGE + 10, PAGE);
    expect(lent?.pieces.reduce((sum, piece) => sum + piece.length, 0)).to.equal(PAGE);
    lent?.release();
    expect(volume.pinRead(15 * PAGE, 2 * PAGE), 'past the end').to.equal(null);
    expect(new MemoryVolume(manager, 'gone', '99999999-0000-4000-8000-000000000000', PAGE, 16 * PAGE).pinRead(0, PAGE), 'no such allocation').to.equal(null);
    expect(manager.tryObtainWritePointer(GUID, 6), 'the loan ended').to.not.equal(null);
  });

  it('copies a range in one synchronous step only when every page of it is resident and not being written', async () => {
    const { manager, store } = setup();
    for (let page = 0; page < 16; page++) store.disk.fill(page + 1, page * PAGE, (page + 1) * PAGE);
    for (const page of [4, 5, 9]) await manager.releasePointer(await manager.obtainReadPointer(GUID, page));
    const volume = new MemoryVolume(manager, 'v', GUID, PAGE, 16 * PAGE);
    // Across the boundary of pages 4 and 5.
    const into = Buffer.alloc(PAGE);
    expect(volume.readResident(4 * PAGE + 100, into)).to.equal(true);
    expect(into.equals(store.disk.subarray(4 * PAGE + 100, 5 * PAGE + 100))).to.equal(true);
    // Page 6 was never paged in: no, and no page-in started either.
    expect(volume.readResident(5 * PAGE + 100, Buffer.alloc(PAGE))).to.equal(false);
    expect(manager.copyResident(GUID, 6, 0, 1, Buffer.alloc(1), 0)).to.equal(false);
    // A page being written: no, until its writer is done.
    const pointer = manager.tryObtainWritePointer(GUID, 9) as NonNullable<ReturnType<typeof manager.tryObtainWritePointer>>;
    expect(volume.readResident(9 * PAGE, Buffer.alloc(16))).to.equal(false);
    pointer.data.fill(0xee, 0, 16);
    await manager.releasePointer(pointer, { offset: 0, length: 16 });
    const after = Buffer.alloc(16);
    expect(volume.readResident(9 * PAGE, after)).to.equal(true);
    expect(after.equals(Buffer.alloc(16, 0xee))).to.equal(true);
    // It says no, never throws (its caller answers partners synchronously): past the end, no such allocation.
    expect(volume.readResident(15 * PAGE, Buffer.alloc(2 * PAGE))).to.equal(false);
    expect(new MemoryVolume(manager, 'gone', '99999999-0000-4000-8000-000000000000', PAGE, 16 * PAGE).readResident(0, Buffer.alloc(PAGE))).to.equal(false);
  });

  it('reads resident pages one turn of copying at a time, letting the loop run between, and waits for a page being written', async () => {
    const small = 4096;
    const size = 3 * 1024 * 1024;
    const disk = Buffer.alloc(size);
    for (let at = 0; at < size; at += 4) disk.writeUInt32LE(at, at);
    const store: BlockStore = {
      readBlocks: async (offset, into) => void disk.copy(into, 0, offset, offset + into.length),
      enqueueBlocks: () => undefined,
      flush: async () => undefined,
    };
    const manager = new MemoryManager(new FramePool(8 * 1024 * 1024), store, new FakePartners(), { highWatermarkPages: 1 << 20, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: size, pageBytes: small });
    const volume = new MemoryVolume(manager, 'v', GUID, small, size);
    for (let page = 0; page < size / small; page++) await manager.releasePointer(await manager.obtainReadPointer(GUID, page));
    // All resident: 3 MiB copied in three turns, so a callback queued for the next turn runs first.
    let turned = false;
    setImmediate(() => (turned = true));
    const all = Buffer.alloc(size);
    await volume.read(0, all);
    expect(all.equals(disk), 'the bytes').to.equal(true);
    expect(turned, 'the loop ran during the read').to.equal(true);
    // One page past the first turn replaced by a write that is still going on: copied up to it,
    // then read through the pointer once the writer is done, with its new bytes.
    const writer = manager.tryObtainWritePointer(GUID, 300) as NonNullable<ReturnType<typeof manager.tryObtainWritePointer>>;
    const during = Buffer.alloc(size);
    const reading = volume.read(0, during);
    writer.data.fill(0x77);
    await manager.releasePointer(writer, { offset: 0, length: small });
    await reading;
    const expected = Buffer.from(disk);
    expected.fill(0x77, 300 * small, 301 * small);
    expect(during.equals(expected)).to.equal(true);
  });

  it('destages a deep queue of scattered pages in address order', async () => {
    const { manager, order, write } = smallPages();
    // More pages than one batch (8 MiB of 4 KiB pages), written in a scattered order.
    const pages = Array.from({ length: 3000 }, (_, index) => (index * 1237) % 4096);
    for (const page of pages) await write(page);
    await manager.flush();
    expect(order).to.have.length(3000);
    expect(order).to.deep.equal([...pages].sort((a, b) => a - b));
  });

  it('sorts again before every batch, from where the last one ended: pages queued while a pass runs join the sweep', async () => {
    const { manager, store, order, write } = smallPages();
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let flushes = 0;
    store.flush = async () => {
      if (flushes++ === 0) await held;
    };
    const early = Array.from({ length: 3000 }, (_, index) => (index * 1237) % 8192);
    for (const page of early) await write(page);
    const flushed = manager.flush();
    await tick();
    // The first batch (2048 pages, 8 MiB) is on its way; these arrive scattered meanwhile.
    expect(order).to.have.length(2048);
    const late = Array.from({ length: 2500 }, (_, index) => (index * 3571 + 11) % 8192);
    for (const page of late) await write(page);
    release();
    await flushed;
    const firstBatch = [...early].sort((a, b) => a - b).slice(0, 2048);
    expect(order.slice(0, 2048)).to.deep.equal(firstBatch);
    // The rest in one sweep up from the page after the first batch's last, then around from page 0.
    const cursor = (firstBatch[firstBatch.length - 1] as number) + 1;
    const rest = [...new Set([...early.filter((page) => !firstBatch.includes(page)), ...late])];
    const sweep = [...rest.filter((page) => page >= cursor).sort((a, b) => a - b), ...rest.filter((page) => page < cursor).sort((a, b) => a - b)];
    expect(order.slice(2048)).to.deep.equal(sweep);
  });

  it('sorts a queue of low pages after a batch that ended past block 2^32 (an array of 16 TiB and more)', async () => {
    const { manager, order, write } = smallPages();
    const high = '11111111-2222-4333-8444-666666666666';
    manager.createAllocation({ guid: high, arrayOffset: (2 ** 32 + 2 ** 20) * 4096, sizeBytes: 16 * 4096, pageBytes: 4096 });
    const pointer = manager.tryObtainWritePointer(high, 3, false) ?? (await manager.obtainWritePointer(high, 3, false));
    await manager.releasePointer(pointer, { offset: 0, length: 4096 });
    await manager.flush();
    order.length = 0;
    const pages = Array.from({ length: 3000 }, (_, index) => (index * 1237) % 8192);
    for (const page of pages) await write(page);
    await manager.flush();
    expect(order).to.deep.equal([...pages].sort((a, b) => a - b));
  });

  describe('paced destage', () => {
    /** smallPages with `high` as its high watermark, pacing on a hand-moved clock; flushes held while `gate.hold` is set. */
    function paced(high: number, ratio = 1): ReturnType<typeof smallPages> & { clock: ManualClock; gate: { hold: Promise<void> | null } } {
      const clock = new ManualClock();
      const pages = smallPages({ highWatermarkPages: high, pacedDestage: { clock, ratio } });
      const gate: { hold: Promise<void> | null } = { hold: null };
      pages.store.flush = async () => {
        if (gate.hold) await gate.hold;
      };
      return { ...pages, clock, gate };
    }
    const settle = async (): Promise<void> => {
      for (let turn = 0; turn < 20; turn++) await tick();
    };

    it('rests between the batches of a watermark pass as long as each took, on its clock; a flush ends the rest', async () => {
      const { manager, clock, order, write } = paced(3000);
      for (let page = 0; page < 3000; page++) await write(page);
      await settle();
      expect(order, 'the first batch (8 MiB), then a rest').to.have.length(2048);
      clock.advance(1);
      await settle();
      expect(order, 'the rest of the pass after the rest').to.have.length(3000);
      for (let page = 3000; page < 6000; page++) await write(page);
      await settle();
      expect(order).to.have.length(3000 + 2048);
      await manager.flush();
      expect(order, 'a flush does not wait for the clock').to.have.length(6000);
    });

    /**
     * A watermark pass of `high` pages whose first batch takes 10 ms on the clock while `more`
     * pages are written: the rest after it, measured as the clock time before the next batch starts.
     */
    async function restAfterBatch(high: number, more: number): Promise<number> {
      const { manager, clock, order, write, gate } = paced(high, 4);
      let release: () => void = () => undefined;
      gate.hold = new Promise<void>((resolve) => (release = resolve));
      for (let page = 0; page < high; page++) await write(page);
      await settle();
      expect(order, 'the pass took the queue at the watermark').to.have.length(high);
      for (let page = high; page < high + more; page++) await write(page);
      clock.advance(10);
      gate.hold = null;
      release();
      await settle();
      let rested = 0;
      while (order.length === high && rested < 100) {
        clock.advance(1);
        rested++;
        await settle();
      }
      await manager.flush();
      return rested;
    }

    it('rests ratio times the batch while the queue is at most the high watermark, less above it, none at twice it', async () => {
      expect(await restAfterBatch(2000, 1000), 'queue 1000 of 2000: the whole ratio').to.equal(40);
      expect(await restAfterBatch(2000, 3000), 'queue 3000: halfway to twice the watermark, half the rest').to.equal(20);
      expect(await restAfterBatch(2000, 3600), 'queue 3600: a fifth of the rest').to.equal(8);
    });

    describe('dirty bound (maxDirtyPages)', () => {
      /** smallPages bounded at `max` dirty pages (no watermark pass), a volume over it, flushes held while `gate.hold` is set. */
      function bounded(max: number | undefined): ReturnType<typeof paced> & { volume: MemoryVolume } {
        const clock = new ManualClock();
        const pages = smallPages({ pacedDestage: { clock, ratio: 4 }, ...(max === undefined ? {} : { maxDirtyPages: max }) });
        const gate: { hold: Promise<void> | null } = { hold: null };
        pages.store.flush = async () => {
          if (gate.hold) await gate.hold;
        };
        return { ...pages, clock, gate, volume: new MemoryVolume(pages.manager, 'v', GUID, 4096, 8192 * 4096) };
      }
      const block = Buffer.alloc(4096, 7);

      it('makes a write that finds the bound reached wait for the destage, and lets it go once below', async () => {
        const { manager, volume, order, gate } = bounded(100);
        let release: () => void = () => undefined;
        gate.hold = new Promise<void>((resolve) => (release = resolve));
        for (let page = 0; page < 100; page++) await volume.write(page * 4096, [block], false);
        expect(manager.dirtyPages, 'below the bound nothing waits, and no watermark pass started').to.equal(100);
        expect(order).to.have.length(0);
        let done = false;
        const waiting = volume.write(100 * 4096, [block], false).then(() => (done = true));
        await settle();
        expect(done, 'the 101st write waits').to.equal(false);
        expect(order, 'and started the destage of the queue').to.have.length(100);
        gate.hold = null;
        release();
        await waiting;
        expect(manager.dirtyPages, 'the write went on once the batch was on the disks').to.equal(1);
      });

      it('lets writes go on past the same count without the bound (the control)', async () => {
        const { manager, volume } = bounded(undefined);
        for (let page = 0; page < 101; page++) await volume.write(page * 4096, [block], false);
        expect(manager.dirtyPages).to.equal(101);
      });

      it('fails the waiting writes with the disks\' error when the destage fails, and changes nothing they would have written', async () => {
        const { manager, volume, store } = bounded(50);
        for (let page = 0; page < 50; page++) await volume.write(page * 4096, [block], false);
        store.flush = async () => {
          throw new Error('member gone');
        };
        let failure: Error | null = null;
        await volume.write(60 * 4096, [Buffer.alloc(4096, 9)], false).catch((error: Error) => (failure = error));
        expect((failure as Error | null)?.message).to.equal('member gone');
        expect(manager.inspectPage(GUID, 60), 'the refused write took no page').to.equal(null);
        expect(manager.dirtyPages, 'the dirty pages are kept for the next try').to.equal(50);
      });
    });

    it('does not rest for the rest of a pass once writes brought the queue to twice the high watermark', async () => {
      const { manager, order, write, gate } = paced(1200);
      let release: () => void = () => undefined;
      gate.hold = new Promise<void>((resolve) => (release = resolve));
      for (let page = 0; page < 1200; page++) await write(page);
      await settle();
      expect(order, 'the pass took the queue at the watermark').to.have.length(1200);
      for (let page = 1200; page < 3800; page++) await write(page);
      gate.hold = null;
      release();
      await settle();
      // 2600 pages queued meanwhile, more than twice the watermark: the pass goes on to its end
      // without a rest, also once fewer are left.
      expect(order).to.have.length(3800);
      await manager.flush();
    });
  });

  it('copies each destage batch into the buffer of the last one, but never into one a failed flush may still leave below', async () => {
    const small = 4096;
    const buffers: ArrayBuffer[] = [];
    let failNext = false;
    const kept: Buffer[] = [];
    const store: BlockStore = {
      readBlocks: async (_offset, into) => void into.fill(0),
      enqueueBlocks: (_offset, data) => {
        if (!buffers.includes(data.buffer as ArrayBuffer)) buffers.push(data.buffer as ArrayBuffer);
        kept.push(data);
      },
      flush: async () => {
        if (failNext) {
          failNext = false;
          throw new Error('member gone');
        }
        kept.length = 0;
      },
    };
    const manager = new MemoryManager(new FramePool(32 * 1024 * 1024), store, new FakePartners(), { highWatermarkPages: 1 << 20, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 2048 * small, pageBytes: small });
    const writeAll = async (byte: number): Promise<void> => {
      for (let page = 0; page < 2048; page++) {
        const pointer = manager.tryObtainWritePointer(GUID, page, false) ?? (await manager.obtainWritePointer(GUID, page, false));
        pointer.data.fill(byte);
        await manager.releasePointer(pointer, { offset: 0, length: small });
      }
    };
    await writeAll(1);
    await manager.flush();
    await writeAll(2);
    await manager.flush();
    expect(buffers, 'one 8 MiB batch buffer for both passes').to.have.length(1);
    await writeAll(3);
    failNext = true;
    await manager.flush().then(
      () => expect.fail('the flush should fail'),
      (error: Error) => expect(error.message).to.equal('member gone'),
    );
    const leftBelow = kept.slice();
    expect(leftBelow.every((data) => data[0] === 3)).to.equal(true);
    await writeAll(4);
    await manager.flush();
    expect(buffers, "the failed pass's buffer was not used again").to.have.length(2);
    expect(leftBelow.every((data) => data[0] === 3), 'what the store kept from the failed pass is unchanged').to.equal(true);
  });

  it('replicates a run of pages once, whole end pages first, then ranges; all pages take one version', async () => {
    const store = new FakeStore();
    const partners = new FakePartners();
    const manager = new MemoryManager(new FramePool(4 * 1024 * 1024), store, partners, { highWatermarkPages: 100, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 16 * PAGE, pageBytes: PAGE });
    const write = async (offset: number, length: number, byte: number): Promise<void> => {
      const pointers = [];
      for (let page = Math.floor(offset / PAGE); page * PAGE < offset + length; page++) {
        const pointer = manager.tryObtainWritePointer(GUID, page, true) ?? (await manager.obtainWritePointer(GUID, page));
        pointer.data.fill(byte, Math.max(0, offset - page * PAGE), Math.min(PAGE, offset + length - page * PAGE));
        pointers.push(pointer);
      }
      await manager.releaseRun(pointers, { offset: offset % PAGE, length });
    };
    await write(PAGE + 100, 2 * PAGE, 3);
    await write(PAGE + 200, 2 * PAGE - 150, 4);
    expect(partners.writes.map(({ virtualPage, offset, length, version, pieces }) => [virtualPage, offset, length, version, pieces])).to.deep.equal([
      [1, 0, 3 * PAGE, 1, 3],
      [1, 200, 2 * PAGE - 150, 2, 3],
    ]);
    const second = partners.writes[1]?.bytes as Buffer;
    expect(second.every((byte) => byte === 4)).to.equal(true);
    expect(manager.dirtyPages).to.equal(3);
    await manager.flush();
    expect(partners.cleans).to.deep.equal([
      [1, 2],
      [2, 2],
      [3, 2],
    ]);
    expect([PAGE + 99, PAGE + 100, PAGE + 200, 3 * PAGE + 49, 3 * PAGE + 50, 3 * PAGE + 100].map((at) => store.disk[at])).to.deep.equal([0, 3, 4, 4, 3, 0]);
  });

  it('makes a run durable before the acknowledgement when a partner cannot take it', async () => {
    const store = new FakeStore();
    const partners = new FakePartners();
    partners.accept = false;
    const manager = new MemoryManager(new FramePool(4 * 1024 * 1024), store, partners, { highWatermarkPages: 100, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 16 * PAGE, pageBytes: PAGE });
    const volume = new MemoryVolume(manager, 'v', GUID, PAGE, 16 * PAGE);
    await volume.write(2 * PAGE, [Buffer.alloc(PAGE, 8), Buffer.alloc(PAGE, 9)], false);
    expect(partners.writes.map((run) => [run.virtualPage, run.length])).to.deep.equal([[2, 2 * PAGE]]);
    expect([store.disk[2 * PAGE], store.disk[4 * PAGE - 1]], 'written through').to.deep.equal([8, 9]);
    expect(manager.dirtyPages).to.equal(0);
  });

  it('MemoryVolume cuts a write into runs of at most 1 MiB and waits for a locked page only after sending what it holds', async () => {
    const store = new FakeStore();
    const partners = new FakePartners();
    const small = 4096;
    const manager = new MemoryManager(new FramePool(4 * 1024 * 1024), store, partners, { highWatermarkPages: 10_000, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 32 * PAGE, pageBytes: small });
    const volume = new MemoryVolume(manager, 'v', GUID, small, 32 * PAGE);
    await volume.write(0, [Buffer.alloc(1024 * 1024 + small, 1)], false);
    expect(partners.writes.map((run) => [run.virtualPage, run.length]), 'a 1 MiB run, then a run of one page').to.deep.equal([
      [0, 1024 * 1024],
      [256, small],
    ]);
    // Page 3 locked by a reader: pages 1-2 travel at once, page 3 and on once the reader lets go.
    partners.writes = [];
    const reader = await manager.obtainReadPointer(GUID, 3);
    const writing = volume.write(small, [Buffer.alloc(4 * small, 2)], false);
    await tick();
    expect(partners.writes.map((run) => [run.virtualPage, run.length])).to.deep.equal([[1, 2 * small]]);
    await manager.releasePointer(reader);
    await writing;
    expect(partners.writes.map((run) => [run.virtualPage, run.length])).to.deep.equal([[1, 2 * small], [3, 2 * small]]);
  });

  it('copies a resident, unlocked page in one step; a page not resident, loading or write-locked is left to the read pointer', async () => {
    const { manager, store } = setup();
    const into = Buffer.alloc(100, 0xee);
    expect(manager.copyResident(GUID, 0, 0, 10, into, 0), 'not resident').to.equal(false);
    store.disk.fill(3, 0, PAGE);
    const loading = manager.obtainReadPointer(GUID, 0);
    expect(manager.copyResident(GUID, 0, 0, 10, into, 0), 'page-in in flight').to.equal(false);
    await manager.releasePointer(await loading);
    const writer = await manager.obtainWritePointer(GUID, 0);
    writer.data.fill(4, 0, 20);
    expect(manager.copyResident(GUID, 0, 0, 10, into, 0), 'write-locked').to.equal(false);
    expect(into.every((byte) => byte === 0xee), 'nothing copied while refused').to.equal(true);
    await manager.releasePointer(writer, { offset: 0, length: 20 });
    expect(manager.copyResident(GUID, 0, 15, 10, into, 50)).to.equal(true);
    expect([...into.subarray(48, 62)]).to.deep.equal([0xee, 0xee, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 0xee, 0xee]);
    // A reader holding it does not stop the copy (readers share).
    const reader = await manager.obtainReadPointer(GUID, 0);
    expect(manager.copyResident(GUID, 0, 0, 1, into, 0)).to.equal(true);
    await manager.releasePointer(reader);
    expect(() => manager.copyResident(GUID, 16, 0, 1, into, 0), 'outside the allocation').to.throw();
  });

  it('MemoryVolume reads resident pages in one turn and pages in the rest, bytes in order', async () => {
    const { manager, store } = setup();
    const volume = new MemoryVolume(manager, 'v', GUID, PAGE, 16 * PAGE);
    for (let page = 0; page < 16; page++) store.disk.fill(page + 1, page * PAGE, (page + 1) * PAGE);
    // Pages 0-2 resident, 3 and on paged in: one read crosses from the fast part into page-ins.
    await volume.read(0, Buffer.alloc(3 * PAGE));
    const writer = await manager.obtainWritePointer(GUID, 1);
    const into = Buffer.alloc(6 * PAGE - 200);
    const reading = volume.read(100, into);
    await tick();
    writer.data.fill(0x77);
    await manager.releasePointer(writer, { offset: 0, length: PAGE });
    await reading;
    const expected = Buffer.concat([Buffer.alloc(PAGE, 1), Buffer.alloc(PAGE, 0x77), ...[3, 4, 5, 6].map((fill) => Buffer.alloc(PAGE, fill))]).subarray(100, 6 * PAGE - 100);
    expect(into.equals(expected)).to.equal(true);
  });

  it('locks only clean, loaded, unlocked pages for a warm handover, and keeps them from being replaced or written while locked', async () => {
    // Locked pages must never be the ones replaced.
    const store = new FakeStore();
    const partners = new FakePartners();
    const pool = new FramePool(4 * 1024 * 1024);
    const manager = new MemoryManager(pool, store, partners, { highWatermarkPages: 100, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 16 * PAGE, pageBytes: PAGE });
    store.disk.fill(3, 3 * PAGE, 4 * PAGE);
    await manager.releasePointer(await manager.obtainReadPointer(GUID, 3));
    await manager.releasePointer(await manager.obtainReadPointer(GUID, 1));
    const dirty = await manager.obtainWritePointer(GUID, 5);
    dirty.data.fill(5);
    await manager.releasePointer(dirty, { offset: 0, length: PAGE });
    const held = await manager.obtainWritePointer(GUID, 7);
    expect(manager.residentPageNumbers(GUID)).to.deep.equal([1, 3, 5, 7]);
    const locked = manager.residentPageNumbers(GUID).flatMap((page) => manager.lockCleanPage(GUID, page) ?? []);
    expect(locked.map((pointer) => pointer.virtualPage), 'page 5 is dirty, page 7 write-locked').to.deep.equal([1, 3]);
    expect(manager.lockCleanPage(GUID, 4), 'not resident').to.equal(null);
    expect(locked[1]?.data[0]).to.equal(3);
    // Nothing of the locked pages is reclaimable: a partner's request for a frame cannot take them.
    expect(manager.reclaim(PAGE)).to.equal(null);
    let writing = false;
    const writer = manager.obtainWritePointer(GUID, 3).then((pointer) => {
      writing = true;
      return pointer;
    });
    await tick();
    expect(writing, 'a writer waits for the copy').to.equal(false);
    for (const pointer of locked) await manager.releasePointer(pointer);
    await manager.releasePointer(await writer);
    await manager.releasePointer(held);
    expect(manager.reclaim(PAGE)).to.not.equal(null);
  });

  it('installs a clean page without a page-in, never over a resident page or outside the allocation', async () => {
    const { manager, store } = setup();
    store.disk.fill(9, 2 * PAGE, 3 * PAGE);
    expect(manager.installCleanPage(GUID, 2, Buffer.alloc(PAGE, 4))).to.equal(true);
    expect(manager.residentPages).to.equal(1);
    // The installed bytes are what a read sees: no page-in replaced them.
    const read = await manager.obtainReadPointer(GUID, 2);
    expect(read.data[0]).to.equal(4);
    await manager.releasePointer(read);
    expect(manager.installCleanPage(GUID, 2, Buffer.alloc(PAGE, 6)), 'resident already').to.equal(false);
    expect(manager.installCleanPage(GUID, 16, Buffer.alloc(PAGE, 6)), 'past the end').to.equal(false);
    expect(manager.installCleanPage(GUID, 3, Buffer.alloc(PAGE / 2, 6)), 'not a page').to.equal(false);
    expect(manager.residentPages).to.equal(1);
    // Clean: replaceable at once, and nothing to destage.
    expect(manager.dirtyPages).to.equal(0);
    expect(manager.reclaim(PAGE)).to.not.equal(null);
    expect(manager.residentPages).to.equal(0);
  });

  it('installs into free frames only: a full pool keeps its pages and refuses the install', async () => {
    const { manager } = setup(2 * PAGE * 16);
    for (let page = 0; page < 16; page++) await manager.releasePointer(await manager.obtainReadPointer(GUID, page));
    const other = '22222222-2222-4333-8444-555555555555';
    manager.createAllocation({ guid: other, arrayOffset: 16 * PAGE, sizeBytes: 32 * PAGE, pageBytes: PAGE });
    for (let page = 0; page < 16; page++) expect(manager.installCleanPage(other, page, Buffer.alloc(PAGE, 1))).to.equal(true);
    expect(manager.installCleanPage(other, 16, Buffer.alloc(PAGE, 1))).to.equal(false);
    expect(manager.residentPages).to.equal(32);
  });

  it('prefetch pages in each run of missing pages with one read, reads through one resident page without touching it, and a failed read leaves nothing resident', async () => {
    const { manager, store, reads } = setupCountingReads();
    // Page 4 resident and written: newer than the disks, which still hold 5s there.
    const written = await manager.obtainWritePointer(GUID, 4);
    written.data.fill(0xee);
    await manager.releasePointer(written, { offset: 0, length: PAGE });
    reads.length = 0;
    manager.prefetch(GUID, 1, 8);
    expect(reads, 'pages 1-8: one read, through resident page 4 (PREFETCH_BRIDGE_BYTES is one 64 KiB page)').to.deep.equal([[1, 8]]);
    expect(manager.residentPages).to.equal(8);
    for (let page = 1; page <= 8; page++) {
      const pointer = await manager.obtainReadPointer(GUID, page);
      const expected = page === 4 ? 0xee : page + 1;
      expect(pointer.data[0], `page ${page}`).to.equal(expected);
      expect(pointer.data[PAGE - 1], `page ${page}`).to.equal(expected);
      await manager.releasePointer(pointer);
    }
    expect(reads, 'no page read twice').to.have.length(1);
    // Past the end of the allocation: stops there.
    manager.prefetch(GUID, 14, 10);
    expect(reads.at(-1)).to.deep.equal([14, 2]);

    store.readBlocks = async () => {
      throw new Error('disk gone');
    };
    manager.prefetch(GUID, 10, 3);
    await tick();
    expect(manager.residentPages, 'failed pages dropped').to.equal(10);
    let caught: unknown = null;
    await manager.obtainReadPointer(GUID, 11).catch((error: unknown) => (caught = error));
    expect((caught as Error)?.message).to.match(/disk gone/);
  });

  it('prefetch ends a run at more than PREFETCH_BRIDGE_BYTES of resident pages, and a run spans at most MAX_RUN_BYTES, bridged pages counted', async () => {
    expect(PREFETCH_BRIDGE_BYTES / PAGE, 'these cases assume one page').to.equal(1);
    expect(MAX_RUN_BYTES / PAGE, 'and runs of 16 pages').to.equal(16);
    const { manager, reads } = setupCountingReads();
    for (const page of [3, 4, 8]) {
      const written = await manager.obtainWritePointer(GUID, page);
      written.data.fill(0xe0 + page);
      await manager.releasePointer(written, { offset: 0, length: PAGE });
    }
    reads.length = 0;
    manager.prefetch(GUID, 0, 12);
    expect(reads, 'two resident pages end a run; one is read through').to.deep.equal([[0, 3], [5, 7]]);
    for (let page = 0; page < 12; page++) {
      const pointer = await manager.obtainReadPointer(GUID, page);
      const expected = [3, 4, 8].includes(page) ? 0xe0 + page : page + 1;
      expect([pointer.data[0], pointer.data[PAGE - 1]], `page ${page}`).to.deep.equal([expected, expected]);
      await manager.releasePointer(pointer);
    }

    const other = '22222222-2222-4333-8444-555555555555';
    manager.createAllocation({ guid: other, arrayOffset: 0, sizeBytes: 24 * PAGE, pageBytes: PAGE });
    await manager.releasePointer(await manager.obtainReadPointer(other, 2));
    reads.length = 0;
    manager.prefetch(other, 0, 24);
    expect(reads, 'page 2 read through; the run stops at 16 pages from its first').to.deep.equal([[0, 16], [16, 8]]);
  });

  it('a read of many missing pages through a pool of one frame finishes: a prefetch never evicts its own pages and wakes frame waiters when loaded', async () => {
    const pool = new FramePool(1024 * 1024);
    while (pool.freeBytes > PAGE) pool.allocate(PAGE);
    const store = new FakeStore();
    const manager = new MemoryManager(pool, store, new FakePartners(), { highWatermarkPages: 100, lowWatermarkPages: 0 });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 16 * PAGE, pageBytes: PAGE });
    for (let page = 0; page < 16; page++) store.disk.fill(page + 1, page * PAGE, (page + 1) * PAGE);
    const reads: number[][] = [];
    const read = store.readBlocks.bind(store);
    store.readBlocks = async (offset, target) => {
      reads.push([offset / PAGE, target.length / PAGE]);
      return read(offset, target);
    };
    const volume = new MemoryVolume(manager, 'vol', GUID, PAGE, 16 * PAGE);
    const into = Buffer.alloc(6 * PAGE);
    await volume.read(2 * PAGE, into);
    for (let page = 0; page < 6; page++) expect(into[page * PAGE], `page ${page + 2}`).to.equal(page + 3);
    // One frame: the prefetch had room for page 2 only (it never replaces a page it installed itself,
    // which would read a run into pages already gone); the rest came one by one as frames were freed
    // (a page waiting for a frame may take page 2's before its reader did: read again, not lost).
    expect(reads[0]).to.deep.equal([2, 1]);
    expect(reads.every(([, pages]) => pages === 1)).to.equal(true);
    for (let page = 3; page <= 7; page++) expect(reads.some(([first]) => first === page), `page ${page} read`).to.equal(true);
  });
});

describe('MemoryManager idle destage', () => {
  function idleSetup(): ReturnType<typeof setup> & { clock: ManualClock; enqueued: number[] } {
    const clock = new ManualClock();
    const store = new FakeStore();
    const partners = new FakePartners();
    const manager = new MemoryManager(new FramePool(4 * 1024 * 1024), store, partners, { highWatermarkPages: 100, lowWatermarkPages: 0, idleDestage: { clock, ms: 50 } });
    manager.createAllocation({ guid: GUID, arrayOffset: 0, sizeBytes: 16 * PAGE, pageBytes: PAGE });
    const enqueued: number[] = [];
    const enqueue = store.enqueueBlocks.bind(store);
    store.enqueueBlocks = (offset, data) => {
      enqueued.push(offset / PAGE);
      enqueue(offset, data);
    };
    return { manager, store, partners, clock, enqueued };
  }

  async function write(manager: MemoryManager, page: number): Promise<void> {
    const pointer = await manager.obtainWritePointer(GUID, page);
    pointer.data.fill(page + 1, 0, 16);
    await manager.releasePointer(pointer, { offset: 0, length: 16 });
  }

  it('destages once a tick passes with no page modified, lowest address first, and not while pages keep changing', async () => {
    const { manager, store, clock, enqueued, partners } = idleSetup();
    for (const page of [9, 3, 7]) await write(manager, page);
    clock.advance(50);
    await tick();
    expect(store.flushes, 'pages changed during the tick').to.equal(0);
    await write(manager, 5);
    clock.advance(50);
    await tick();
    expect(store.flushes, 'still changing').to.equal(0);
    clock.advance(50);
    await tick();
    expect(store.flushes).to.equal(1);
    expect(enqueued).to.deep.equal([3, 5, 7, 9]);
    expect(manager.dirtyPages).to.equal(0);
    expect(store.disk[9 * PAGE]).to.equal(10);
    expect(partners.cleans.map(([page]) => page).sort((a, b) => a - b)).to.deep.equal([3, 5, 7, 9]);
    clock.advance(500);
    await tick();
    expect(store.flushes, 'nothing dirty: no more passes').to.equal(1);
  });

  it('does nothing after stopIdleDestage (a fenced node writes nothing more to the disks)', async () => {
    const { manager, store, clock } = idleSetup();
    await write(manager, 2);
    manager.stopIdleDestage();
    await write(manager, 4);
    clock.advance(500);
    await tick();
    expect(store.flushes).to.equal(0);
    expect(manager.dirtyPages).to.equal(2);
  });

  it('leaves a failed destage to the next flush instead of retrying it every tick', async () => {
    const { manager, store, clock } = idleSetup();
    await write(manager, 1);
    const flush = store.flush.bind(store);
    store.flush = async () => {
      store.flushes++;
      throw new Error('member gone');
    };
    clock.advance(50);
    clock.advance(50);
    await tick();
    expect(store.flushes).to.equal(1);
    clock.advance(500);
    await tick();
    expect(store.flushes, 'no retry per tick').to.equal(1);
    expect(manager.dirtyPages, 'still dirty, queued again').to.equal(1);
    store.flush = flush;
    await manager.flush();
    expect(store.disk[PAGE]).to.equal(2);
  });
});
