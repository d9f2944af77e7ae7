// The destager: dirty blocks on their way to the array.
//
//   enqueue(offset, data) ──> dirty map (a newer enqueue of a block replaces the older data)
//        background: dirty ≥ high watermark ──> destage batches until dirty ≤ low watermark
//        flush(): destage now, whatever the watermarks say, and wait until it is done
//        flushBlocks(offset, length): only those blocks, ahead of everything else (a write-through)
//   batch: take ≤ maxBatchBlocks dirty blocks not already on their way, in offset order; merge
//          neighbours into single writes, write them in parallel, then one sync for the batch. A
//          block turns clean only if its data was not replaced meanwhile, and only after the sync.
//
// Up to `maxConcurrentBatches` batches run at once: while one syncs, the next already writes, so
// a stream of small writes pays for a sync per batch, not per write (group commit).
//
// Blocks a targeted flush waits for are urgent: they go out in batches of their own, up to
// `maxConcurrentBatches` more of them beside the others, so a write-through acknowledgement waits for
// its own block and a sync, not for a backlog of thousands (a node that took over a dead partner's
// volumes destages everything it mirrored while it already serves them).
import { eachInFlight } from '../core/index.js';
import { BLOCK_BYTES } from './layout.js';


/** RAID writes one destage batch keeps in flight. */
const WRITES_IN_FLIGHT = 16;
export interface DestageTarget {
  write(offset: number, data: Buffer): Promise<void>;
  /** Many runs at once, at most `inFlight` writes in flight (RaidArray groups a stripe's runs). */
  writeRuns?(runs: ReadonlyArray<{ offset: number; data: Buffer }>, inFlight: number): Promise<void>;
  sync(): Promise<void>;
}

export interface DestagerOptions {
  highWatermarkBlocks: number;
  lowWatermarkBlocks: number;
  /** Blocks written per batch (one sync each). */
  maxBatchBlocks: number;
  maxConcurrentBatches: number;
}

interface Dirty {
  data: Buffer;
  /** Bumped by every enqueue, so a batch knows whether what it wrote is still the newest. */
  generation: number;
  inFlight: boolean;
}

export class Destager {
  private readonly dirty = new Map<number, Dirty>();
  private generation = 0;
  private batches = 0;
  private flushing = 0;
  /** Set at the high watermark, cleared at the low one: background destaging has hysteresis. */
  private draining = false;
  private failure: Error | null = null;
  private failures = 0;
  /** Blocks some batch is writing: a newer version waits for the next batch, so writes of one block never race. */
  private readonly writing = new Set<number>();
  private completions: Array<() => void> = [];
  /** Dirty blocks a targeted flush waits for and no batch has taken yet. */
  private readonly urgent = new Set<number>();
  private urgentBatches = 0;
  /**
   * The oldest generation in each batch being written. A newer enqueue of a block replaces its map
   * entry while the older data may still be on its way to the array: a flush must wait for that
   * write too, or it would resolve while the caller's buffer is still being read (and before that
   * data is synced).
   */
  private readonly inFlightOldest: number[] = [];
  /** Called with each run of blocks once it is clean (written and synced). */
  onClean: (offset: number, data: Buffer) => void = () => undefined;

  constructor(
    private readonly target: DestageTarget,
    private readonly options: DestagerOptions,
  ) {
    if (!(options.lowWatermarkBlocks < options.highWatermarkBlocks && options.maxBatchBlocks > 0 && options.maxConcurrentBatches > 0)) {
      throw new Error('destager needs low < high watermark and positive batch size and concurrency');
    }
  }

  get dirtyBlocks(): number {
    return this.dirty.size;
  }

  /** The newest data of a dirty block, for readers that must see writes not yet on the array. */
  dirtyBlock(block: number): Buffer | undefined {
    return this.dirty.get(block)?.data;
  }

  /** Marks whole blocks dirty; `data` is kept (not copied) until it is clean. */
  enqueue(offset: number, data: Buffer): void {
    const first = offset / BLOCK_BYTES;
    // One block (a takeover hands over mirrored pages one by one) is kept as it came: no new view.
    const whole = data.length === BLOCK_BYTES;
    for (let i = 0; i < data.length / BLOCK_BYTES; i++) {
      this.dirty.set(first + i, { data: whole ? data : data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES), generation: ++this.generation, inFlight: false });
    }
    this.pump();
  }

  /** Resolves once every block dirty at the time of the call is clean; rejects if destaging fails. */
  async flush(): Promise<void> {
    const target = this.generation;
    const failuresBefore = this.failures;
    this.flushing++;
    try {
      while (this.hasDirtyUpTo(target) || this.inFlightOldest.some((generation) => generation <= target)) {
        if (this.failures > failuresBefore) throw this.failure;
        this.pump();
        await new Promise<void>((resolve) => this.completions.push(resolve));
      }
    } finally {
      this.flushing--;
    }
  }

  /**
   * Resolves once the blocks of `[offset, offset + length)` are clean as they were at the call (or
   * newer); rejects if destaging fails before they are. They go out ahead of other dirty blocks.
   */
  async flushBlocks(offset: number, length: number): Promise<void> {
    const first = offset / BLOCK_BYTES;
    const count = length / BLOCK_BYTES;
    const target = this.generation;
    const failuresBefore = this.failures;
    for (let block = first; block < first + count; block++) {
      const entry = this.dirty.get(block);
      if (entry && !entry.inFlight) this.urgent.add(block);
    }
    while (this.pendingAmong(first, count, target)) {
      if (this.failures > failuresBefore) throw this.failure;
      this.pump();
      await new Promise<void>((resolve) => this.completions.push(resolve));
    }
  }

  /** A block of the range is dirty at `generation` or older, or some batch is still writing it. */
  private pendingAmong(first: number, count: number, generation: number): boolean {
    for (let block = first; block < first + count; block++) {
      if (this.writing.has(block)) return true;
      const entry = this.dirty.get(block);
      if (entry && entry.generation <= generation) return true;
    }
    return false;
  }

  private hasDirtyUpTo(generation: number): boolean {
    for (const entry of this.dirty.values()) if (entry.generation <= generation) return true;
    return false;
  }

  /**
   * Starts batches while there is room and a reason: urgent blocks (in batches of their own), a
   * flush waiting, or dirty above the watermark.
   */
  private pump(): void {
    while (this.urgent.size > 0 && this.urgentBatches < this.options.maxConcurrentBatches) {
      const taken = this.takeUrgent();
      if (taken.length === 0) break;
      this.run(taken, true);
    }
    while (this.batches < this.options.maxConcurrentBatches) {
      if (this.dirty.size >= this.options.highWatermarkBlocks) this.draining = true;
      if (this.dirty.size <= this.options.lowWatermarkBlocks) this.draining = false;
      if (this.flushing === 0 && !this.draining) return;
      if (this.dirty.size === 0) return;
      const taken = this.take();
      if (taken.length === 0) return;
      this.run(taken, false);
    }
  }

  private run(taken: Array<readonly [number, Dirty]>, urgent: boolean): void {
    if (urgent) this.urgentBatches++;
    else this.batches++;
    let oldest = Infinity;
    for (const [, entry] of taken) oldest = Math.min(oldest, entry.generation);
    this.inFlightOldest.push(oldest);
    this.destage(taken).then(
      () => {
        this.failure = null;
      },
      (error: Error) => {
        for (const [, entry] of taken) entry.inFlight = false;
        this.failure = error;
        this.failures++;
      },
    ).finally(() => {
      for (const [block] of taken) this.writing.delete(block);
      this.inFlightOldest.splice(this.inFlightOldest.indexOf(oldest), 1);
      if (urgent) this.urgentBatches--;
      else this.batches--;
      const waiting = this.completions;
      this.completions = [];
      for (const resolve of waiting) resolve();
      // After a failure only a new enqueue or flush tries again, so a dead array is not hammered.
      if (!this.failure) this.pump();
    });
  }

  /** Urgent blocks that can go now, in offset order; the rest (an older write in flight) wait. */
  private takeUrgent(): Array<readonly [number, Dirty]> {
    const taken: Array<readonly [number, Dirty]> = [];
    for (const block of this.urgent) {
      const entry = this.dirty.get(block);
      if (!entry || entry.inFlight) {
        this.urgent.delete(block);
        continue;
      }
      if (this.writing.has(block)) continue;
      this.urgent.delete(block);
      taken.push([block, entry]);
      if (taken.length === this.options.maxBatchBlocks) break;
    }
    taken.sort((a, b) => a[0] - b[0]);
    return this.claim(taken);
  }

  private take(): Array<readonly [number, Dirty]> {
    const free = [...this.dirty.entries()].filter(([block, entry]) => !entry.inFlight && !this.writing.has(block) && !this.urgent.has(block));
    free.sort((a, b) => a[0] - b[0]);
    return this.claim(free.slice(0, this.options.maxBatchBlocks));
  }

  private claim(taken: Array<readonly [number, Dirty]>): Array<readonly [number, Dirty]> {
    for (const [block, entry] of taken) {
      entry.inFlight = true;
      this.writing.add(block);
    }
    return taken;
  }

  private async destage(taken: Array<readonly [number, Dirty]>): Promise<void> {
    const runs: Array<{ first: number; entries: Dirty[] }> = [];
    for (const [block, entry] of taken) {
      const last = runs[runs.length - 1];
      if (last && last.first + last.entries.length === block) last.entries.push(entry);
      else runs.push({ first: block, entries: [entry] });
    }
    const writes = runs.map((run) => ({
      offset: run.first * BLOCK_BYTES,
      data: joined(run.entries),
      run,
    }));
    // A bounded number of writes in flight (eachInFlight says why); RaidArray takes them all at
    // once, to write the runs that share a stripe as one update.
    if (this.target.writeRuns) await this.target.writeRuns(writes, WRITES_IN_FLIGHT);
    else await eachInFlight(writes, WRITES_IN_FLIGHT, (write) => this.target.write(write.offset, write.data));
    await this.target.sync();
    for (const write of writes) {
      write.run.entries.forEach((entry, i) => {
        const block = write.run.first + i;
        if (this.dirty.get(block) === entry) this.dirty.delete(block);
      });
      this.onClean(write.offset, write.data);
    }
  }
}

/**
 * The run's blocks as one buffer: a view when they lie side by side in one buffer already (a
 * destage batch of the memory manager is one copy cut into blocks), else a concatenation.
 */
function joined(entries: readonly Dirty[]): Buffer {
  const first = (entries[0] as Dirty).data;
  let end = first.byteOffset + first.length;
  for (let i = 1; i < entries.length; i++) {
    const data = (entries[i] as Dirty).data;
    if (data.buffer !== first.buffer || data.byteOffset !== end) return Buffer.concat(entries.map((entry) => entry.data));
    end += data.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}
