// The simulated shared disk: what every node's memory manager (or takeover) writes to, one 4 KiB
// block per scheduler step, in the order the blocks were enqueued (the array serialises them), except
// that a block a targeted flush (flushBlocks, a write-through) waits for may land ahead of older
// blocks at other offsets, as the storage stack's destager sends such blocks first.
//
//   enqueueBlocks ──> queue [block, block, …] ──(one per step)──> durable bytes ──> flush resolves once
//                                                                                   its blocks are durable
//
// Durable is only what a step has applied. When a node crashes, each of its waiting blocks lands,
// vanishes, or tears at a 512-byte sector; the survivors' blocks land after, in order. Reads see
// durable bytes only: the memory manager reads a page only once it is clean, so a cache of waiting
// blocks in between would not change what it reads.
import assert from 'node:assert/strict';
import type { BlockStore } from '../../src/storage/index.js';
import { randomInt } from '../support/seeded-random.js';
import type { Action, ActionSource } from './scheduler.js';

export const BLOCK_BYTES = 4096;
const SECTOR_BYTES = 512;

export interface QueuedBlock {
  offset: number;
  data: Buffer;
  writer: number;
  /** What `data` held when enqueued: the store keeps the caller's buffer, so it must not change. */
  enqueuedAs: Buffer;
  /** Bytes of `data` that land: less than a block when a crash tore it. */
  length: number;
  /** Position in the disk's whole history of blocks. */
  sequence: number;
}

export interface DiskOptions {
  applyWeight: number;
  readWeight: number;
}

export class SimDisk {
  readonly durable: Buffer;
  readonly queue: QueuedBlock[] = [];
  private enqueued = 0;
  blocksWritten = 0;
  readsDone = 0;
  private flushWaiters: Array<{ upTo: number; resolve: () => void }> = [];
  /** Targeted flushes (flushBlocks): their blocks may land ahead of the queue, as the destager sends them. */
  private rangeWaiters: Array<{ offset: number; end: number; upTo: number; resolve: () => void }> = [];
  private readonly reads: Array<{ offset: number; into: Buffer; resolve: () => void }> = [];
  /** Tells the simulation which bytes changed, so its checks look again at those pages. */
  onDurable: (offset: number, length: number) => void = () => undefined;
  onContractBroken: (message: string) => void = () => undefined;
  /** Set by a test that wants a disk whose flush lies. */
  flushLies = false;

  constructor(
    sizeBytes: number,
    private readonly options: DiskOptions,
  ) {
    this.durable = Buffer.alloc(sizeBytes);
  }

  /** The BlockStore one node sees: its writes are tagged with its id, so a crash can tear them. */
  storeFor(writer: number): BlockStore {
    return {
      readBlocks: (offset, into) => this.read(offset, into),
      enqueueBlocks: (offset, data) => this.enqueue(writer, offset, data),
      flush: () => this.flush(),
      flushBlocks: (offset, length) => this.flushBlocks(offset, length),
    };
  }

  readonly source: ActionSource = (ready: Action[]) => {
    if (this.queue.length > 0) {
      const head = this.queue[0] as QueuedBlock;
      ready.push({ label: `disk write block ${head.offset / BLOCK_BYTES} (node ${head.writer})`, weight: this.options.applyWeight, run: () => this.applyOne() });
    }
    // A block a targeted flush waits for may land before older blocks of other offsets (never
    // before an older block of its own offset: the destager keeps writes of one block in order).
    const ahead = this.firstAhead();
    if (ahead > 0) {
      const block = this.queue[ahead] as QueuedBlock;
      ready.push({ label: `disk write block ${block.offset / BLOCK_BYTES} ahead (node ${block.writer})`, weight: this.options.applyWeight, run: () => this.applyAt(ahead) });
    }
    // Reads are independent: any waiting one may finish first.
    this.reads.forEach((read, index) => {
      ready.push({ label: `disk read block ${read.offset / BLOCK_BYTES}+${read.into.length / BLOCK_BYTES}`, weight: this.options.readWeight, run: () => this.finishRead(index) });
    });
  };

  get busy(): boolean {
    return this.queue.length > 0 || this.reads.length > 0;
  }

  enqueue(writer: number, offset: number, data: Buffer): void {
    assert(offset % BLOCK_BYTES === 0 && data.length % BLOCK_BYTES === 0, `node ${writer} enqueued ${data.length} bytes at ${offset}: not whole blocks`);
    assert(offset + data.length <= this.durable.length, `node ${writer} wrote beyond the disk`);
    // Kept, not copied, like the storage stack's destager: a caller that hands over its live frame
    // and writes it again before the block is durable is caught when the block lands.
    for (let at = 0; at < data.length; at += BLOCK_BYTES) {
      const block = data.subarray(at, at + BLOCK_BYTES);
      this.queue.push({ offset: offset + at, data: block, enqueuedAs: Buffer.from(block), length: BLOCK_BYTES, writer, sequence: this.enqueued++ });
    }
  }

  /**
   * What the survivors of a crash would read in `[offset, offset + into.length)`: durable bytes,
   * then every waiting block in queue order except those `skip` says never land.
   */
  survivorBytes(offset: number, into: Buffer, skip: (block: QueuedBlock) => boolean = () => false): void {
    this.durable.copy(into, 0, offset, offset + into.length);
    for (const block of this.queue) {
      if (block.offset + BLOCK_BYTES <= offset || block.offset >= offset + into.length || skip(block)) continue;
      block.data.copy(into, block.offset - offset, 0, block.length);
    }
  }

  /**
   * `writer` crashed: each of its waiting blocks lands whole, is lost, or is torn at a sector (the
   * rest of the block keeps its old bytes). The survivors' blocks stay queued.
   */
  crash(writer: number, random: () => number): { lost: number; torn: number } {
    const damage = { lost: 0, torn: 0 };
    const kept: QueuedBlock[] = [];
    for (const block of this.queue) {
      if (block.writer !== writer) {
        kept.push(block);
        continue;
      }
      const roll = random();
      if (roll < 0.4) {
        kept.push(block);
        continue;
      }
      if (roll < 0.8) {
        damage.lost++;
        continue;
      }
      damage.torn++;
      kept.push({ ...block, length: randomInt(random, BLOCK_BYTES / SECTOR_BYTES) * SECTOR_BYTES });
    }
    this.queue.splice(0, this.queue.length, ...kept);
    this.wakeFlushWaiters();
    return damage;
  }

  private read(offset: number, into: Buffer): Promise<void> {
    assert(offset % BLOCK_BYTES === 0 && into.length % BLOCK_BYTES === 0, `read of ${into.length} bytes at ${offset}: not whole blocks`);
    return new Promise((resolve) => this.reads.push({ offset, into, resolve }));
  }

  private flush(): Promise<void> {
    if (this.flushLies || this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push({ upTo: this.enqueued, resolve }));
  }

  /** Resolves once the blocks of the range enqueued before the call are durable. */
  private flushBlocks(offset: number, length: number): Promise<void> {
    const upTo = this.enqueued;
    const end = offset + length;
    if (this.flushLies || !this.queue.some((block) => block.sequence < upTo && block.offset >= offset && block.offset < end)) return Promise.resolve();
    return new Promise((resolve) => this.rangeWaiters.push({ offset, end, upTo, resolve }));
  }

  /** Index of the first queued block some targeted flush waits for that may land now; -1 if none. */
  private firstAhead(): number {
    if (this.rangeWaiters.length === 0) return -1;
    for (let index = 0; index < this.queue.length; index++) {
      const block = this.queue[index] as QueuedBlock;
      if (!this.rangeWaiters.some((waiter) => block.sequence < waiter.upTo && block.offset >= waiter.offset && block.offset < waiter.end)) continue;
      let older = false;
      for (let before = 0; before < index && !older; before++) older = (this.queue[before] as QueuedBlock).offset === block.offset;
      if (!older) return index;
    }
    return -1;
  }

  private applyOne(): void {
    this.applyAt(0);
  }

  private applyAt(index: number): void {
    const [block] = this.queue.splice(index, 1) as [QueuedBlock];
    if (!block.data.equals(block.enqueuedAs)) this.onContractBroken(`node ${block.writer} changed block ${block.offset / BLOCK_BYTES} after enqueueing it, before it was durable`);
    block.data.copy(this.durable, block.offset, 0, block.length);
    this.blocksWritten++;
    this.onDurable(block.offset, BLOCK_BYTES);
    this.wakeFlushWaiters();
  }

  /** A flush is done once no block enqueued before it still waits. */
  private wakeFlushWaiters(): void {
    const oldest = this.queue.length > 0 ? (this.queue[0] as QueuedBlock).sequence : this.enqueued;
    const due = this.flushWaiters.filter((waiter) => waiter.upTo <= oldest);
    this.flushWaiters = this.flushWaiters.filter((waiter) => waiter.upTo > oldest);
    for (const waiter of due) waiter.resolve();
    const done = this.rangeWaiters.filter((waiter) => !this.queue.some((block) => block.sequence < waiter.upTo && block.offset >= waiter.offset && block.offset < waiter.end));
    if (done.length === 0) return;
    this.rangeWaiters = this.rangeWaiters.filter((waiter) => !done.includes(waiter));
    for (const waiter of done) waiter.resolve();
  }

  private finishRead(index: number): void {
    const [read] = this.reads.splice(index, 1) as [{ offset: number; into: Buffer; resolve: () => void }];
    this.durable.copy(read.into, 0, read.offset, read.offset + read.into.length);
    this.readsDone++;
    read.resolve();
  }
}
