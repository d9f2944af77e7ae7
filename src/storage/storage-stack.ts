// The storage stack of one node: the RAID array, the storage cache in front of it and the
// destager behind it, seen as one block device of whole 4 KiB blocks.
//
// Reads see the newest data: a dirty block (enqueued, not yet on the array) comes from the
// destager, the rest through the cache. Writes become dirty blocks; `flushBlocks` waits until they
// are on the array and synced, which is how a node without a live partner acknowledges: nothing it
// acknowledged lives only in its memory. Concurrent writers share each sync (group commit).
import { Destager, type DestagerOptions } from './destager.js';
import { BLOCK_BYTES } from './layout.js';
import type { RaidArray } from './raid-array.js';
import { StorageCache, type StorageCacheOptions } from './storage-cache.js';
import { StripeLocks } from './stripe-locks.js';

export interface StorageStackOptions extends StorageCacheOptions, DestagerOptions {}

export const DEFAULT_STACK_OPTIONS: StorageStackOptions = {
  capacityBytes: 64 * 1024 * 1024,
  readAheadBytes: 256 * 1024,
  keepReads: false,
  highWatermarkBlocks: 4096,
  lowWatermarkBlocks: 1024,
  maxBatchBlocks: 2048,
  maxConcurrentBatches: 2,
};

export class StorageStack {
  readonly cache: StorageCache;
  readonly destager: Destager;
  /** Block locks: a partial-block update reads, modifies and enqueues a block alone. */
  readonly blockLocks = new StripeLocks();

  constructor(
    readonly array: RaidArray,
    options: StorageStackOptions = DEFAULT_STACK_OPTIONS,
  ) {
    this.cache = new StorageCache(array, options);
    this.destager = new Destager(array, options);
    // Dropped, not copied in: destaged blocks are pages a memory manager keeps resident (this node's,
    // or the partner's that sent them), so a copy here was a second image nobody read, and allocating
    // it (a megabyte per destage run) drove the collector.
    this.destager.onClean = (offset, data) => this.cache.invalidate(offset, data.length);
  }

  get sizeBytes(): number {
    return this.array.sizeBytes;
  }

  /** Reads whole blocks, dirty ones from the destager and the rest through the cache. */
  async readBlocks(offset: number, into: Buffer): Promise<void> {
    const first = offset / BLOCK_BYTES;
    const count = into.length / BLOCK_BYTES;
    let runStart = -1;
    const loads: Array<Promise<void>> = [];
    for (let i = 0; i <= count; i++) {
      const dirty = i < count ? this.destager.dirtyBlock(first + i) : undefined;
      if (dirty) dirty.copy(into, i * BLOCK_BYTES);
      const clean = i < count && !dirty;
      if (clean && runStart < 0) runStart = i;
      if (!clean && runStart >= 0) {
        loads.push(this.cache.read((first + runStart) * BLOCK_BYTES, into.subarray(runStart * BLOCK_BYTES, i * BLOCK_BYTES)));
        runStart = -1;
      }
    }
    await Promise.all(loads);
  }

  /** See BlockStore.readKnown: blocks with no newer dirty data that the array knows are zeroes. */
  readKnown(offset: number, into: Buffer): boolean {
    const first = offset / BLOCK_BYTES;
    const count = into.length / BLOCK_BYTES;
    for (let i = 0; i < count; i++) if (this.destager.dirtyBlock(first + i)) return false;
    if (!this.array.knownZero(offset, into.length)) return false;
    into.fill(0);
    return true;
  }

  /** Marks whole blocks dirty; the data is owned by the stack from here on. */
  enqueueBlocks(offset: number, data: Buffer): void {
    this.destager.enqueue(offset, data);
  }

  /** Everything enqueued so far is on the array and synced. */
  async flush(): Promise<void> {
    await this.destager.flush();
  }

  /** The blocks of `[offset, offset + length)` are on the array and synced, ahead of other dirty blocks. */
  async flushBlocks(offset: number, length: number): Promise<void> {
    await this.destager.flushBlocks(offset, length);
  }

  async stop(): Promise<void> {
    await this.destager.flush();
    await this.array.stop();
  }
}
