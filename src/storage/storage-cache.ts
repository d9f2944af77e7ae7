// The storage cache: clean 4 KiB blocks of the array in an LRU bounded in bytes (lru-cache), with
// read-ahead for sequential readers.
//
//   read(offset, into) ── hits copied out ──────────────────────────────┐
//        │ misses, grouped into contiguous runs                        │
//        └─> array.read(run) ─> fill cache (unless a write got there first)
//   sequential? (this read starts where the last one ended)
//        └─> array.read(next window) in the background ─> fill cache
//
// The cache holds only what the array holds: writers call put() or invalidate() once their data is
// on the array. A load that started before a put() must not overwrite the newer block with what it read,
// so each load takes a token per block and a put() or invalidate() revokes it.
import { LRUCache } from 'lru-cache';
import { BLOCK_BYTES } from './layout.js';

export interface BlockSource {
  readonly sizeBytes: number;
  read(offset: number, into: Buffer): Promise<void>;
}

export interface StorageCacheOptions {
  capacityBytes: number;
  /** How far ahead of a sequential reader to load; 0 turns read-ahead off. */
  readAheadBytes: number;
  /**
   * Keep a copy of what a caller read (default). A node's stack does not: its memory manager keeps
   * every page it read in its own frames, and drops a page only after the cache (smaller than the
   * pool) would have, so the copy costs a memcpy into fresh memory per page-in and is never read.
   */
  keepReads?: boolean;
}

export interface CacheStatistics {
  hits: number;
  misses: number;
  readAheadBlocks: number;
}

export class StorageCache {
  private readonly blocks: LRUCache<number, Buffer>;
  private readonly loads = new Map<number, object>();
  private lastReadEnd = -1;
  private readAheadEnd = 0;
  readonly statistics: CacheStatistics = { hits: 0, misses: 0, readAheadBlocks: 0 };

  constructor(
    private readonly source: BlockSource,
    private readonly options: StorageCacheOptions,
  ) {
    this.blocks = new LRUCache<number, Buffer>({ maxSize: Math.max(BLOCK_BYTES, options.capacityBytes), sizeCalculation: () => BLOCK_BYTES });
  }

  get cachedBytes(): number {
    return this.blocks.calculatedSize;
  }

  /** Reads whole blocks at a block-aligned offset, from the cache where it can. */
  async read(offset: number, into: Buffer): Promise<void> {
    const first = offset / BLOCK_BYTES;
    const count = into.length / BLOCK_BYTES;
    const runs: Array<[number, number]> = [];
    for (let i = 0; i < count; i++) {
      const cached = this.blocks.get(first + i);
      if (cached) {
        cached.copy(into, i * BLOCK_BYTES);
        this.statistics.hits++;
        continue;
      }
      this.statistics.misses++;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === i) last[1]++;
      else runs.push([i, 1]);
    }
    const sequential = offset === this.lastReadEnd;
    // A jump starts a new stream: its read-ahead must not be limited by how far the last one got.
    if (!sequential) this.readAheadEnd = 0;
    this.lastReadEnd = offset + into.length;
    await Promise.all(runs.map(([start, length]) => this.load(offset + start * BLOCK_BYTES, into.subarray(start * BLOCK_BYTES, (start + length) * BLOCK_BYTES))));
    if (sequential) this.readAhead(offset + into.length);
  }

  /** Records blocks now on the array (after a write). */
  put(offset: number, data: Buffer): void {
    const first = offset / BLOCK_BYTES;
    // One copy for the run, cut into per-block views (as load does), not an allocation per block.
    const copy = copyOf(data);
    for (let i = 0; i < data.length / BLOCK_BYTES; i++) {
      this.loads.delete(first + i);
      this.blocks.set(first + i, copy.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES));
    }
  }

  invalidate(offset: number, lengthBytes: number): void {
    const first = offset / BLOCK_BYTES;
    for (let i = 0; i < lengthBytes / BLOCK_BYTES; i++) {
      this.loads.delete(first + i);
      this.blocks.delete(first + i);
    }
  }

  clear(): void {
    this.loads.clear();
    this.blocks.clear();
  }

  /** `owned`: `into` is the cache's own (read-ahead), kept as it is; a caller's buffer is copied. */
  private async load(offset: number, into: Buffer, owned = false): Promise<void> {
    const first = offset / BLOCK_BYTES;
    const count = into.length / BLOCK_BYTES;
    const token = {};
    for (let i = 0; i < count; i++) this.loads.set(first + i, token);
    try {
      await this.source.read(offset, into);
    } catch (error) {
      for (let i = 0; i < count; i++) if (this.loads.get(first + i) === token) this.loads.delete(first + i);
      throw error;
    }
    if (!owned && this.options.keepReads === false) {
      for (let i = 0; i < count; i++) if (this.loads.get(first + i) === token) this.loads.delete(first + i);
      return;
    }
    // One copy for the whole run, cut into per-block views: the caller keeps `into`.
    const copy = owned ? into : copyOf(into);
    for (let i = 0; i < count; i++) {
      if (this.loads.get(first + i) !== token) continue;
      this.loads.delete(first + i);
      this.blocks.set(first + i, copy.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES));
    }
  }

  /** Loads the window after a sequential read, once; errors are left for the real read to meet. */
  private readAhead(from: number): void {
    if (this.options.readAheadBytes === 0) return;
    const start = Math.max(from, this.readAheadEnd);
    const end = Math.min(this.source.sizeBytes, from + this.options.readAheadBytes);
    if (start >= end) return;
    this.readAheadEnd = end;
    const blocks: number[] = [];
    for (let block = start / BLOCK_BYTES; block < end / BLOCK_BYTES; block++) if (!this.blocks.has(block) && !this.loads.has(block)) blocks.push(block);
    if (blocks.length === 0) return;
    const firstBlock = blocks[0] as number;
    const length = ((blocks[blocks.length - 1] as number) - firstBlock + 1) * BLOCK_BYTES;
    this.statistics.readAheadBlocks += length / BLOCK_BYTES;
    // Read straight into the buffer the cached blocks will be views of: no second copy of the window.
    this.load(firstBlock * BLOCK_BYTES, Buffer.allocUnsafe(length), true).catch(() => undefined);
  }
}

/** A copy in memory of its own (one memcpy). */
function copyOf(data: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(data.length);
  data.copy(copy);
  return copy;
}
