// The memory manager of one node (the patent's Figs. 4–8, made concrete for its own allocations):
// pages of allocations live in frames of the frame pool; a read or write goes through
// obtain pointer → copy → release pointer.
//
//   obtainReadPointer / obtainWritePointer   resident? lock (shared / exclusive) : take a frame
//        (evicting clean, unlocked pages in LRU order — the replacement queue), page in, lock.
//        A conflicting lock, or no frame at all, parks the request in the page's wait list or the
//        paging queue; it is retried when locks or frames free up. It waits; it never fails.
//   releasePointer(modified range)           the page's version rises; with live partners the
//        range is replicated (write page → command complete from every partner) before the call
//        returns, then a copy joins the destage queue; without partners the copy is destaged and
//        synced first (write-through). Either way the caller acknowledges only after that.
//   destage queue                            high watermark starts destaging, low stops it; a page
//        turns clean once its version is on the disks, and partners are told (page clean).
//
// A partner that has not seen a page since it was last clean gets the whole page, later only the
// modified ranges, so its mirror is always a complete page image.
import assert from 'node:assert/strict';
import { MAX_RUN_BYTES, systemClock, type Clock } from '../core/index.js';
import type { BlockStore } from '../storage/index.js';
import { FRAME_BYTES, type FramePool } from './frame-pool.js';
import { NONE, PageTable } from './page-table.js';
import { MAX_PAGE_CLEAN_PAGES } from '../partner/index.js';

/** Below the memory manager: whole 4 KiB blocks at array offsets (the storage stack). */
/**
 * The change of a run of consecutive pages of one allocation (one page, or many), as one
 * replication: the bytes `offset` … `offset + length` counted from the start of page `virtualPage`,
 * in pieces that are views into the pages' frames (sent by reference, never copied).
 */
export interface PageWrite {
  allocation: string;
  virtualPage: number;
  version: number;
  pageBytes: number;
  offset: number;
  length: number;
  data: readonly Buffer[];
}

/**
 * The most bytes one run replicates: what one write page frame carries (a whole 1 MiB NBD write of
 * 4 KiB pages is one run, one message and one answer, not 256 of each).
 */
export { MAX_RUN_BYTES };

/** How much of resident pages a prefetch run reads through rather than end there (see prefetch). */
export const PREFETCH_BRIDGE_BYTES = 64 * 1024;

/** Staging buffers kept for the next prefetch runs: as many as a QD8 1 MiB reader keeps busy, and some. */
const SPARE_STAGING_BUFFERS = 16;

/** Beside the memory manager: the partners. */
export interface Replicator {
  /** Partners that must hold a change before it is acknowledged. */
  livePartners(): number;
  /**
   * Sends the write (one message per partner) to every live partner; resolves true once all of
   * them applied it, false if any could not (then the caller falls back to write-through for it).
   */
  writePage(write: PageWrite): Promise<boolean>;
  /** Pages `virtualPage` … `virtualPage + pageCount - 1` (a run, one version) are on the disks. */
  pageClean(allocation: string, virtualPage: number, version: number, pageCount?: number): void;
  /** Resolves once every live partner has handled what was sent to it before the call. */
  barrier?(): Promise<void>;
  /** Fig. 5: the allocation's structures on every partner, before any of its pages travel. */
  allocateMemory?(spec: AllocationSpec): void;
  /** Fig. 9: dismantle them. */
  releaseMemory?(guid: string): void;
}

export interface AllocationSpec {
  guid: string;
  arrayOffset: number;
  sizeBytes: number;
  pageBytes: number;
}

/** Bytes of pages handed to the storage stack per destage batch (one sync each). */
const DESTAGE_BATCH_BYTES = 8 * 1024 * 1024;

export interface MemoryManagerOptions {
  highWatermarkPages: number;
  lowWatermarkPages: number;
  /**
   * Null when a write may go on now, else a promise of when it may: the cluster's rules on who must
   * hold a copy (node.ts acknowledgeGate). Asked before a mirrored write is sent, and before a
   * write-through is acknowledged (`writeThrough`). Not called at all without it (one process, tests).
   */
  acknowledgeGate?: (writeThrough: boolean) => Promise<void> | null;
  /** Counts partner links coming up (a mirrored write must not straddle one). */
  linkGeneration?: () => number;
  /**
   * Destage while writes pause: at each tick of `ms` in which no page was modified, one batch of
   * dirty pages (the lowest array addresses first) goes to the disks, until none is dirty. Without
   * it dirty pages wait for the high watermark, a flush or a frame shortage: a FLUSH after a burst
   * of writes then destages the whole burst while the client waits for it.
   */
  idleDestage?: { clock: Clock; ms: number };
  /**
   * A watermark pass yields to the front end: after each batch it waits up to `ratio` times as long
   * as the batch took. Unpaced, a pass took most of the event loop that acknowledges writes for
   * seconds (35000 → 5000–8000 IOPS while it ran, docs/benchmarks.md). The wait shrinks as the
   * queue grows past the high watermark, to none at twice it: the more is dirty, the larger the
   * destage's share. A flush or a page waiting for a frame ends the pauses. Without it, no pauses.
   */
  pacedDestage?: { clock: Clock; ratio: number };
  /**
   * Pages that may be dirty at once (queued for destage or in a batch on its way to the disks); a
   * write that finds this many waits for the destage (dirtyRoom). A partner that takes over this
   * node's volumes hands each page it mirrored to its storage stack before it serves them (about
   * 2.5 µs a page here): without a bound in pages, a large pool under a fast writer made that
   * hand-over alone longer than a second. Unbounded (the frame pool alone) if absent.
   */
  maxDirtyPages?: number;
}

export interface PagePointer {
  readonly allocation: string;
  readonly virtualPage: number;
  readonly mode: 'read' | 'write';
  /** The frame: a view of the pool, valid until the pointer is released. */
  readonly data: Buffer;
}

/** Pages a prefetch installs together and reads with one request; `loaded` is every page's page-in meanwhile. */
interface PrefetchRun {
  virtualPages: number[];
  slots: number[];
  /** Each slot's generation when installed: a slot given to another page meanwhile is left alone. */
  generations: number[];
  loaded: Promise<void>;
  settle: (error: Error | null) => void;
}

function prefetchRun(): PrefetchRun {
  let settle: (error: Error | null) => void = () => undefined;
  const loaded = new Promise<void>((resolve, reject) => {
    settle = (error) => (error ? reject(error) : resolve());
  });
  // Waiters attach their own handlers; an unobserved failure is not an unhandled rejection.
  loaded.catch(() => undefined);
  return { virtualPages: [], slots: [], generations: [], loaded, settle };
}

interface Allocation extends AllocationSpec {
  /** Its number in the page table. */
  readonly number: number;
  /** Virtual page → the slot of the page table (its frame) holding it. */
  pages: Map<number, number>;
}

export class MemoryManager {
  private readonly allocations = new Map<string, Allocation>();
  /** The same allocations by their number in the page table. */
  private readonly allocationsByNumber = new Map<number, Allocation>();
  private nextAllocationNumber = 0;
  /**
   * Every resident page's state, by slot (page-table.ts). Its replacement queue holds the resident
   * pages not waiting for destage, in the order they entered it. A use only marks a page
   * referenced; replacement moves a referenced page to the back once (second chance, the clock
   * approximation of least recently used) and takes the first one that was not. Moving the page on
   * every use cost three map operations per 4 KiB read or written: a tenth of the owner's time in a
   * 1 MiB read. Dirty pages leave the queue while they wait for destage and come back once clean,
   * so finding a victim never walks past thousands of dirty pages (which made a full pool quadratic).
   */
  private readonly table: PageTable;
  private resident = 0;
  private versionClock = 0;
  /** A paced pass's wait between batches, and whether the pass was told to stop pacing. */
  private paceRelease: (() => void) | null = null;
  private hurried = false;
  /** The array block after the last destaged batch: where the next sorted batch starts (sortDestageQueue). */
  private destageCursor = 0;
  /** Slots of dirty pages waiting for destage, each once (queued for destage), in the order they were queued. */
  private readonly destageQueue: number[] = [];
  /** Requests waiting for a free frame (the paging queue). */
  private frameWaiters: Array<() => void> = [];
  /** Writes waiting for the dirty set to fall below maxDirtyPages. */
  private dirtyWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  /** Pages of the destage batch on its way to the disks: still dirty, no longer in the queue. */
  private pagesInBatch = 0;
  private destaging: Promise<void> | null = null;
  private destageFailure: Error | null = null;
  /**
   * The copy buffer of the last destage batch, used again by the next. An 8 MiB buffer allocated
   * per batch was external memory V8 counted towards its next full collection: a 1 MiB write
   * stream made it collect the whole heap a few times a second. It is given back only after the
   * batch's flush succeeded, when nothing below still reads it: the destager has written every
   * block it covered (Destager.flush waits for writes of blocks replaced meanwhile too), the array
   * access dropped what it kept for a resend. After a failed flush the storage stack may still hold
   * and write it later: then it is left to the collector.
   */
  private spareBatchBuffer: Buffer | null = null;
  /**
   * Staging buffers of MAX_RUN_BYTES for prefetch runs whose frames are not one after another in
   * the pool or which bridge resident pages; given back once their read succeeded (after a failed
   * one a member read may still be writing into it: then it is left to the collector).
   */
  private readonly spareStaging: Buffer[] = [];

  private resyncsRunning = 0;
  private resyncOwed = false;
  /** The idle destage's tick, while pages are dirty; whether a page was modified since the last one. */
  private idleTick: (() => void) | null = null;
  private modifiedSinceTick = false;
  private idleDestageStopped = false;

  constructor(
    private readonly pool: FramePool,
    private readonly store: BlockStore,
    private readonly replicator: Replicator,
    private readonly options: MemoryManagerOptions,
  ) {
    this.table = new PageTable(pool.poolBytes);
  }

  createAllocation(spec: AllocationSpec): void {
    if (this.allocations.has(spec.guid)) throw new Error(`allocation ${spec.guid} exists`);
    if (spec.sizeBytes % spec.pageBytes !== 0) throw new Error(`allocation ${spec.guid}: size is not a whole number of pages`);
    const allocation: Allocation = { ...spec, number: this.nextAllocationNumber++, pages: new Map() };
    this.allocations.set(spec.guid, allocation);
    this.allocationsByNumber.set(allocation.number, allocation);
    this.replicator.allocateMemory?.(spec);
  }

  /** The allocation grew online (its new pages read zeros from the disks); partners are told its new shape. */
  growAllocation(guid: string, sizeBytes: number): void {
    const allocation = this.allocations.get(guid);
    if (!allocation) throw new Error(`unknown allocation ${guid}`);
    if (sizeBytes < allocation.sizeBytes || sizeBytes % allocation.pageBytes !== 0) throw new Error(`allocation ${guid}: cannot grow from ${allocation.sizeBytes} to ${sizeBytes} bytes`);
    allocation.sizeBytes = sizeBytes;
    this.replicator.allocateMemory?.({ guid, arrayOffset: allocation.arrayOffset, sizeBytes, pageBytes: allocation.pageBytes });
  }

  /**
   * Fig. 9: everything of the allocation to the disks, its frames back to the pool, and its
   * structures dismantled on every partner. Callers stop using it first.
   */
  async releaseAllocation(guid: string): Promise<void> {
    const allocation = this.allocations.get(guid);
    if (!allocation) throw new Error(`unknown allocation ${guid}`);
    const table = this.table;
    // A write that finished during a flush may have dirtied a page again: flush until none is dirty.
    // A dirty page is never dropped (that would lose an acknowledged write).
    for (let attempt = 0; ; attempt++) {
      await this.flush();
      for (const [virtualPage, slot] of allocation.pages) {
        if ((table.readers[slot] as number) > 0 || table.writer(slot) || table.loading(slot)) throw new Error(`allocation ${guid}: page ${virtualPage} is still in use`);
      }
      const dirty = [...allocation.pages.values()].some((slot) => !table.clean(slot));
      if (!dirty) break;
      if (attempt >= 10) throw new Error(`allocation ${guid}: pages still dirty after ${attempt + 1} flushes`);
    }
    for (const [virtualPage, slot] of [...allocation.pages]) this.drop(allocation, virtualPage, slot);
    this.allocations.delete(guid);
    this.allocationsByNumber.delete(allocation.number);
    this.replicator.releaseMemory?.(guid);
  }

  /** Bytes the replacement queue could free now (a partner's space request asks). */
  get reclaimableBytes(): number {
    const table = this.table;
    let bytes = 0;
    for (let slot = table.first(); slot !== NONE; slot = table.after(slot)) {
      if (table.readers[slot] === 0 && !table.writer(slot) && table.clean(slot)) bytes += this.ownerOf(slot).pageBytes;
    }
    return bytes;
  }

  /**
   * Null while a write may dirty pages now; else a promise that resolves once the dirty set is
   * below maxDirtyPages again (the destage runs without its rests meanwhile), or rejects with the
   * disks' error if the destage fails. Asked before a write takes its first page: a write never
   * waits for this while it holds pages, which the destage may need to read.
   */
  dirtyRoom(): Promise<void> | null {
    const max = this.options.maxDirtyPages;
    if (max === undefined || this.destageQueue.length + this.pagesInBatch < max) return null;
    if (this.destaging === null) this.destageForRoom();
    this.hurry();
    return new Promise<void>((resolve, reject) => this.dirtyWaiters.push({ resolve, reject }));
  }

  get dirtyPages(): number {
    return this.destageQueue.length;
  }

  get residentPages(): number {
    return this.resident;
  }

  /**
   * A frame of `bytes` for someone else (a partner's mirrored page), taken from the clean, unlocked
   * pages in LRU order; null if there is none. The caller frees it to the pool.
   */
  reclaim(bytes: number): number | null {
    return this.replaceOne(bytes);
  }

  /**
   * Pages in what is not resident of pages `firstPage` … `firstPage + count - 1`, one read of the
   * disks per run of consecutive missing pages (up to MAX_RUN_BYTES), instead of one per page: a
   * cold sequential read of 4 KiB pages otherwise costs 256 page-ins, each its own trip through the
   * cache and the RAID, per MiB. The pages are installed clean and unlocked, loading; whoever takes a
   * pointer on one waits for its load, and a failed load drops them (the per-page path then pages
   * in again and reports the error). Stops at the first page for which no frame is free or
   * replaceable now: the per-page path waits for frames, this does not.
   *
   * A run goes on across up to PREFETCH_BRIDGE_BYTES of resident pages: after random 4 KiB reads
   * or writes have left a third of a volume's pages resident, a 1 MiB read otherwise split into some
   * eighty reads of the disks, each its own trip through the threadpool (about 12 µs of the main
   * thread on two cores, more than reading the bridged pages' blocks again). The bridged pages'
   * bytes are read and dropped: a resident page is never overwritten from the disks.
   */
  prefetch(guid: string, firstPage: number, count: number): void {
    const allocation = this.allocations.get(guid);
    if (!allocation) return;
    const { pageBytes } = allocation;
    const end = Math.min(firstPage + count, allocation.sizeBytes / pageBytes);
    const maxRunPages = Math.max(1, MAX_RUN_BYTES / pageBytes);
    const maxBridgePages = Math.floor(PREFETCH_BRIDGE_BYTES / pageBytes);
    let run: PrefetchRun | null = null;
    let runFirst = 0;
    let bridged = 0;
    for (let virtualPage = firstPage; virtualPage <= end; virtualPage++) {
      const missing = virtualPage < end && !allocation.pages.has(virtualPage);
      if (run && !missing && virtualPage < end && bridged < maxBridgePages) {
        bridged++;
        continue;
      }
      if (run && (!missing || virtualPage - runFirst + 1 > maxRunPages)) {
        this.loadRun(allocation, run);
        run = null;
      }
      bridged = 0;
      if (!missing) continue;
      const frame = this.pool.allocate(pageBytes) ?? this.replaceOne(pageBytes);
      if (frame === null) break;
      if (run === null) {
        run = prefetchRun();
        runFirst = virtualPage;
      }
      const slot = this.residentPage(allocation, virtualPage, frame, null, true);
      // Loading from now on: no replacement (this prefetch's own included) takes it before its read.
      this.table.setLoading(slot, run.loaded);
      run.virtualPages.push(virtualPage);
      run.slots.push(slot);
      run.generations.push(this.table.generation[slot] as number);
    }
    if (run) this.loadRun(allocation, run);
  }

  /** One read for a run of new pages: straight into their frames when they lie one after another in the pool. */
  private loadRun(allocation: Allocation, run: PrefetchRun): void {
    const { pageBytes } = allocation;
    const table = this.table;
    const { virtualPages, slots, generations } = run;
    const firstPage = virtualPages[0] as number;
    const firstFrame = table.frame(slots[0] as number);
    // The run's pages and the resident pages it bridges (read, then dropped).
    const bytes = ((virtualPages[virtualPages.length - 1] as number) - firstPage + 1) * pageBytes;
    const contiguous = bytes === slots.length * pageBytes && slots.every((slot, index) => table.frame(slot) === firstFrame + index * pageBytes);
    const staging = contiguous ? null : bytes > MAX_RUN_BYTES ? Buffer.allocUnsafeSlow(bytes) : (this.spareStaging.pop() ?? Buffer.allocUnsafeSlow(MAX_RUN_BYTES));
    const into = staging === null ? this.pool.memory.subarray(firstFrame, firstFrame + bytes) : staging.subarray(0, bytes);
    // A loading page is never replaced or dropped but by its loader; the generation check keeps
    // that true should anything change.
    const same = (index: number): boolean => table.generation[slots[index] as number] === generations[index];
    this.store.readBlocks(allocation.arrayOffset + firstPage * pageBytes, into).then(
      () => {
        for (let index = 0; index < slots.length; index++) {
          if (!same(index)) continue;
          const slot = slots[index] as number;
          if (staging !== null) {
            const from = ((virtualPages[index] as number) - firstPage) * pageBytes;
            into.copy(this.pool.memory, table.frame(slot), from, from + pageBytes);
          }
          table.setLoading(slot, null);
        }
        if (staging?.length === MAX_RUN_BYTES && this.spareStaging.length < SPARE_STAGING_BUFFERS) this.spareStaging.push(staging);
        run.settle(null);
        // Unlocked and loaded: replaceable now, so whoever waits for a frame may take one.
        this.wakeFrameWaiters();
      },
      (error: Error) => {
        // Their bytes mean nothing: out of memory, so the next reader pages in again (and meets the error).
        for (let index = 0; index < slots.length; index++) {
          if (!same(index)) continue;
          const slot = slots[index] as number;
          table.setLoading(slot, null);
          this.drop(allocation, virtualPages[index] as number, slot);
        }
        run.settle(error);
      },
    );
  }

  /** Fig. 6: a shared lock on a resident page, paging it in first if needed. */
  async obtainReadPointer(guid: string, virtualPage: number): Promise<PagePointer> {
    const allocation = this.allocationOf(guid, virtualPage);
    const slot = await this.acquire(allocation, virtualPage, 'read', true);
    return { allocation: guid, virtualPage, mode: 'read', data: this.view(slot, allocation.pageBytes) };
  }

  /**
   * Fig. 6, 8 in one synchronous step: copies `length` bytes from `inPage` of a page that is
   * resident, loaded and not write-locked into `into` at `at`, and says whether it did; else
   * nothing changed and the caller takes the read pointer. Nothing can run between the check and
   * the copy, so the shared lock would be taken and released unseen: a read of resident pages costs
   * no promise, closure or lock per page. A page that is not resident but whose bytes the store
   * knows without I/O (never written) is installed here first, in a free frame.
   */
  copyResident(guid: string, virtualPage: number, inPage: number, length: number, into: Buffer, at: number): boolean {
    const allocation = this.allocationOf(guid, virtualPage);
    const slot = allocation.pages.get(virtualPage) ?? this.installKnown(allocation, virtualPage);
    if (slot === null || !this.table.readable(slot)) return false;
    const from = this.table.frame(slot) + inPage;
    this.pool.memory.copy(into, at, from, from + length);
    this.table.touch(slot);
    return true;
  }

  /**
   * A clean page of bytes the store knows without I/O, installed unlocked in this step; null (and
   * nothing changed) when the store does not know them or no frame is free. Free frames only: a
   * replacement here would evict a page even when the store then says no.
   */
  private installKnown(allocation: Allocation, virtualPage: number): number | null {
    if (this.store.readKnown === undefined) return null;
    const frame = this.pool.allocate(allocation.pageBytes);
    if (frame === null) return null;
    const view = this.pool.memory.subarray(frame, frame + allocation.pageBytes);
    if (!this.store.readKnown(allocation.arrayOffset + virtualPage * allocation.pageBytes, view)) {
      this.pool.free(frame);
      // Freed with its buddy, a larger frame someone waits for may exist again.
      this.wakeFrameWaiters();
      return null;
    }
    return this.residentPage(allocation, virtualPage, frame, null, true);
  }

  /**
   * Fig. 6 without the copy: shared locks on the pages holding `length` bytes from `inPage` of page
   * `firstPage` on, if every one of them is resident, loaded and not write-locked in this
   * synchronous step; their bytes as views of the pool, one per stretch of frames that lie side by
   * side. Null, and nothing locked, otherwise. The caller unpins the same pages once it no longer
   * reads the views (a read reply: once the socket took it).
   */
  pinResident(guid: string, firstPage: number, inPage: number, length: number): Buffer[] | null {
    const allocation = this.allocationOf(guid, firstPage);
    const { pageBytes } = allocation;
    const table = this.table;
    const pageCount = Math.ceil((inPage + length) / pageBytes);
    if (firstPage + pageCount > allocation.sizeBytes / pageBytes) throw new RangeError(`pages ${firstPage}+${pageCount} are outside allocation ${guid}`);
    for (let index = 0; index < pageCount; index++) {
      const slot = allocation.pages.get(firstPage + index);
      if (slot === undefined || !table.readable(slot)) return null;
    }
    const pieces: Buffer[] = [];
    let start = -1;
    let end = -1;
    for (let index = 0; index < pageCount; index++) {
      const slot = allocation.pages.get(firstPage + index) as number;
      table.readers[slot]++;
      table.touch(slot);
      const frame = table.frame(slot);
      const from = frame + (index === 0 ? inPage : 0);
      const to = frame + Math.min(pageBytes, inPage + length - index * pageBytes);
      if (from !== end) {
        if (start >= 0) pieces.push(this.pool.memory.subarray(start, end));
        start = from;
      }
      end = to;
    }
    pieces.push(this.pool.memory.subarray(start, end));
    return pieces;
  }

  /** Releases what pinResident locked: `pageCount` pages from `firstPage` on. */
  unpinResident(guid: string, firstPage: number, pageCount: number): void {
    const allocation = this.allocations.get(guid) as Allocation;
    for (let index = 0; index < pageCount; index++) {
      const slot = allocation.pages.get(firstPage + index) as number;
      this.table.readers[slot]--;
      this.wake(slot);
    }
  }

  /** Fig. 7: the exclusive lock. A whole-page overwrite need not page in what it replaces. */
  async obtainWritePointer(guid: string, virtualPage: number, pageIn = true): Promise<PagePointer> {
    const allocation = this.allocationOf(guid, virtualPage);
    const slot = await this.acquire(allocation, virtualPage, 'write', pageIn);
    return { allocation: guid, virtualPage, mode: 'write', data: this.view(slot, allocation.pageBytes) };
  }

  /**
   * Fig. 7 without waiting: the exclusive lock if it can be had in this synchronous step (the page
   * is resident and unlocked, or a frame is at hand for a whole-page overwrite), else null and
   * nothing changed. A writer of many pages collects a run this way and never waits while it
   * holds pages of a run not yet released.
   */
  tryObtainWritePointer(guid: string, virtualPage: number, pageIn = true): PagePointer | null {
    const allocation = this.allocationOf(guid, virtualPage);
    const table = this.table;
    const existing = allocation.pages.get(virtualPage);
    if (existing !== undefined) {
      if (table.loading(existing) || table.writer(existing) || (table.readers[existing] as number) > 0) return null;
      table.setWriter(existing, true);
      table.touch(existing);
      return { allocation: guid, virtualPage, mode: 'write', data: this.view(existing, allocation.pageBytes) };
    }
    if (pageIn) return null;
    const frame = this.pool.allocate(allocation.pageBytes) ?? this.replaceOne(allocation.pageBytes);
    if (frame === null) return null;
    const slot = this.residentPage(allocation, virtualPage, frame, 'write', false);
    return { allocation: guid, virtualPage, mode: 'write', data: this.view(slot, allocation.pageBytes) };
  }

  /**
   * A resident page as checkers see it (the simulator compares it with its model): its bytes as a
   * view, whether they are filled (loaded, and not taken for an overwrite still to land), and
   * whether a version is not on the disks yet. Not a use: no lock, no reference for replacement.
   */
  inspectPage(guid: string, virtualPage: number): { data: Buffer; filled: boolean; dirty: boolean } | null {
    const allocation = this.allocations.get(guid);
    const slot = allocation?.pages.get(virtualPage);
    if (allocation === undefined || slot === undefined) return null;
    const table = this.table;
    return { data: this.view(slot, allocation.pageBytes), filled: table.loading(slot) === null && !table.unfilled(slot), dirty: !table.clean(slot) };
  }

  /** The allocation's resident page numbers, in order: what a warm handover walks. */
  residentPageNumbers(guid: string): number[] {
    const allocation = this.allocations.get(guid);
    if (!allocation) throw new Error(`unknown allocation ${guid}`);
    return [...allocation.pages.keys()].sort((a, b) => a - b);
  }

  /**
   * A read lock on a page if it is resident, loaded, clean and not write-locked now, with its
   * version; else null and nothing changed. A warm handover copies such pages to the next owner:
   * the lock keeps the frame from being replaced or written while its bytes travel by reference,
   * and the version tells a later pass whether the page changed since. The caller releases it.
   */
  lockCleanPage(guid: string, virtualPage: number): (PagePointer & { version: number }) | null {
    const allocation = this.allocations.get(guid);
    const slot = allocation?.pages.get(virtualPage);
    if (allocation === undefined || slot === undefined || !this.table.readable(slot) || !this.table.clean(slot)) return null;
    this.table.readers[slot]++;
    return { allocation: guid, virtualPage, mode: 'read', data: this.view(slot, allocation.pageBytes), version: this.table.version[slot] as number };
  }

  /**
   * A page whose bytes equal what the disks hold, put in memory without a page-in (a warm handover,
   * or a takeover's mirrored pages once they are on the disks). `frame` is a block of the pool of
   * the allocation's page size, handed over to this manager when installed; false (and the caller
   * keeps the frame) when the page is resident already or outside the allocation.
   */
  installCleanFrame(guid: string, virtualPage: number, frame: number): boolean {
    const allocation = this.allocations.get(guid);
    if (!allocation || !Number.isInteger(virtualPage) || virtualPage < 0 || virtualPage >= allocation.sizeBytes / allocation.pageBytes) return false;
    if (allocation.pages.has(virtualPage) || this.pool.view(frame).length !== allocation.pageBytes) return false;
    this.residentPage(allocation, virtualPage, frame, null, true);
    return true;
  }

  /**
   * installCleanFrame for bytes held elsewhere: copied into a free frame of the pool. Never evicts
   * (a warm start must not cost pages in use); false when no frame is free or it is not installed.
   */
  installCleanPage(guid: string, virtualPage: number, data: Buffer): boolean {
    const allocation = this.allocations.get(guid);
    if (!allocation || data.length !== allocation.pageBytes) return false;
    const frame = this.pool.allocate(allocation.pageBytes);
    if (frame === null) return false;
    data.copy(this.pool.view(frame));
    if (this.installCleanFrame(guid, virtualPage, frame)) return true;
    this.pool.free(frame);
    return false;
  }

  /** Frames of the shared pool were freed elsewhere (the mirror store's, lent to a destage): parked requests try again. */
  framesReturned(): void {
    this.wakeFrameWaiters();
  }

  /** Fig. 8. Resolves when a modification is held by every live partner, or is on the disks. */
  async releasePointer(pointer: PagePointer, modified?: { offset: number; length: number }): Promise<void> {
    if (pointer.mode === 'write') return this.releaseRun([pointer], modified);
    const allocation = this.allocations.get(pointer.allocation) as Allocation;
    const slot = allocation.pages.get(pointer.virtualPage) as number;
    this.table.readers[slot]--;
    this.wake(slot);
  }

  /**
   * Fig. 8 for write pointers of consecutive pages of one allocation (`pointers[i]` holds page
   * `pointers[0].virtualPage + i`), changed in one range: from `modified.offset` in the first page,
   * `modified.length` bytes on, so every page but the first and the last is changed whole. One
   * version and one replication for the run. Resolves when every live partner holds the change, or
   * it is on the disks; the locks are held until then.
   */
  async releaseRun(pointers: readonly PagePointer[], modified?: { offset: number; length: number }): Promise<void> {
    const first = pointers[0] as PagePointer;
    const allocation = this.allocations.get(first.allocation) as Allocation;
    const pageBytes = allocation.pageBytes;
    const table = this.table;
    const slots = pointers.map((pointer, index) => {
      assert(pointer.mode === 'write' && pointer.allocation === first.allocation && pointer.virtualPage === first.virtualPage + index, 'a run is write pointers of consecutive pages');
      return allocation.pages.get(pointer.virtualPage) as number;
    });
    if (!(slots.length * pageBytes <= MAX_RUN_BYTES)) assert.fail(`a run of ${slots.length} pages of ${pageBytes} bytes exceeds ${MAX_RUN_BYTES}`);
    assert(!modified || modified.length === 0 || (modified.offset + modified.length > (slots.length - 1) * pageBytes && modified.offset < pageBytes && modified.offset + modified.length <= slots.length * pageBytes), 'the range must touch every page of the run');
    let changed = modified !== undefined && modified.length > 0;
    // Made only when a page is dropped (rare): not an array per release on the write path.
    let dropped = null as number[] | null;
    try {
      slots.forEach((slot, index) => {
        if (!table.unfilled(slot)) return;
        const from = index === 0 ? (modified?.offset ?? 0) : 0;
        const to = modified ? Math.min(pageBytes, modified.offset + modified.length - index * pageBytes) : 0;
        if (from !== 0 || to !== pageBytes) {
          // The overwrite that justified skipping the page-in did not happen: the frame holds nothing.
          assert(!changed || slots.length === 1, 'a page taken without page-in must be written whole');
          this.drop(allocation, first.virtualPage + index, slot);
          (dropped ??= []).push(slot);
          changed = false;
          return;
        }
        table.setUnfilled(slot, false);
      });
      if (changed) await this.modified(allocation, first.virtualPage, slots, modified as { offset: number; length: number });
    } finally {
      for (const slot of slots) {
        if (dropped?.includes(slot)) continue;
        table.setWriter(slot, false);
        this.wake(slot);
      }
    }
  }

  /**
   * A partner joined (or came back): it holds none of our pages, or stale ones, so the next change
   * of every page sends the whole page again before it counts as mirrored.
   */
  partnerJoined(): void {
    for (const allocation of this.allocations.values()) for (const slot of allocation.pages.values()) this.table.setMirrored(slot, false);
    void this.resync();
  }

  /**
   * Whether no partner may hold stale mirrors of this node's pages: each join's resync is done.
   * A write-through is acknowledged only then (with the lease rule in acknowledgeGate).
   */
  get partnersResynced(): boolean {
    return this.resyncsRunning === 0 && !this.resyncOwed;
  }

  /** For status: a resync after a join is running, failed (retried at the next join), or done. */
  get resyncState(): 'running' | 'failed' | 'done' {
    return this.resyncsRunning > 0 ? 'running' : this.resyncOwed ? 'failed' : 'done';
  }

  /**
   * After a partner joins: everything modified so far goes to the disks (a destage that failed
   * while they were out of reach is retried too), then every partner drops its mirrors of versions
   * up to then. A partner that was cut off kept the pages of the time of the cut; this node may have
   * written newer ones through meanwhile, and those old copies must never reach the disks after them.
   */
  private async resync(): Promise<void> {
    this.resyncsRunning++;
    const version = this.versionClock;
    try {
      await this.flush();
      for (const allocation of this.allocations.values()) {
        const pages = allocation.sizeBytes / allocation.pageBytes;
        for (let first = 0; first < pages; first += MAX_PAGE_CLEAN_PAGES) this.replicator.pageClean(allocation.guid, first, version, Math.min(MAX_PAGE_CLEAN_PAGES, pages - first));
      }
      await this.replicator.barrier?.();
      this.resyncOwed = false;
    } catch (error) {
      this.destageFailure = error as Error;
      this.resyncOwed = true;
    } finally {
      this.resyncsRunning--;
    }
  }

  /**
   * A partner's link closed. With none left, pages acknowledged while mirrored live in this node's
   * memory only: they go to the disks now, not at the next watermark (found by the simulator, seed
   * 108 --strict). flush(), not destage(0): a pass already running keeps its higher goal.
   */
  partnerLost(): void {
    if (this.replicator.livePartners() > 0) return;
    this.flush().catch((error: Error) => {
      this.destageFailure = error;
    });
  }

  /** Everything modified so far is on the disks (NBD FLUSH); rejects if the disks refuse it. */
  async flush(): Promise<void> {
    // Hurried each turn: a watermark pass may start between two of them.
    while (this.destageQueue.length > 0 || this.destaging) {
      this.hurry();
      await this.destage(0);
    }
    if (this.destageFailure) throw this.destageFailure;
  }

  /** `slots` are write-locked by the caller (releaseRun) until this settles: no one replaces or drops them meanwhile. */
  private async modified(allocation: Allocation, firstPage: number, slots: readonly number[], range: { offset: number; length: number }): Promise<void> {
    const table = this.table;
    // From one clock for all pages, not counted per page: a page that is replaced and paged in
    // again must not reuse the versions of its earlier life, or a late page clean for the old one
    // would free a partner's mirror of a newer write (simulator, seed 9801). One tick per run:
    // versions only ever compare within one page.
    const version = ++this.versionClock;
    for (const slot of slots) table.version[slot] = version;
    this.modifiedSinceTick = true;
    if (this.replicator.livePartners() > 0) {
      // Who must hold a copy is linked before the copies go out, and no partner joined while they
      // did (it would lack this one): else this write goes through to the disks instead.
      const ready = this.options.acknowledgeGate?.(false);
      if (ready) await ready;
      const generation = this.options.linkGeneration?.() ?? 0;
      const held = this.replicator.livePartners() > 0 && (await this.replicate(allocation, firstPage, slots, version, range));
      if (held && (this.options.linkGeneration?.() ?? 0) === generation) {
        for (const slot of slots) table.setMirrored(slot, true);
        for (const slot of slots) this.queueDestage(slot);
        if (this.destageQueue.length >= this.options.highWatermarkPages) this.destageInBackground(this.options.lowWatermarkPages, false, true);
        // A rest started below twice the watermark ends once writes brought the queue there.
        if (this.destageQueue.length >= 2 * this.options.highWatermarkPages) this.hurry();
        return;
      }
      // Some live partner does not hold it: the next change sends the whole page again, and this
      // one is made durable before it is acknowledged.
      for (const slot of slots) table.setMirrored(slot, false);
    }
    // No partner holds a copy: write-through, acknowledged once on the disks.
    const copies = this.copyPages(slots);
    const offset = allocation.arrayOffset + firstPage * allocation.pageBytes;
    slots.forEach((_, index) => this.store.enqueueBlocks(offset + index * allocation.pageBytes, copies.subarray(index * allocation.pageBytes, (index + 1) * allocation.pageBytes)));
    try {
      // Its own blocks only: after a partner died, a backlog of what it had mirrored is on its way
      // to the disks too, and a new write waits for its sync, not for that backlog's.
      await (this.store.flushBlocks ? this.store.flushBlocks(offset, copies.length) : this.store.flush());
    } catch (error) {
      // Not acknowledged, but the frame holds it: it stays queued for destage (retried by the next
      // pass or flush) instead of pinning an unevictable dirty frame forever.
      for (const slot of slots) this.queueDestage(slot);
      throw error;
    }
    const wait = this.options.acknowledgeGate?.(true);
    if (wait) await wait;
    for (const slot of slots) if (table.version[slot] === version) table.cleanVersion[slot] = version;
    // Partners that did take this version (some may have, before another failed) may drop it now;
    // without this a partner kept such a page for good (found by the simulator, seed 2 --strict).
    this.replicator.pageClean(allocation.guid, firstPage, version, slots.length);
  }

  /**
   * Sends the run's change to every live partner. A partner that has not held a page since it was
   * last clean gets it whole: the range is widened to the whole first and last page where they are
   * not mirrored (the pages between are changed whole anyway).
   */
  private replicate(allocation: Allocation, firstPage: number, slots: readonly number[], version: number, range: { offset: number; length: number }): Promise<boolean> {
    const pageBytes = allocation.pageBytes;
    const table = this.table;
    const last = slots.length - 1;
    const start = table.mirrored(slots[0] as number) ? range.offset : 0;
    const end = table.mirrored(slots[last] as number) ? range.offset + range.length : slots.length * pageBytes;
    const data = slots.map((slot, index) => {
      const frame = table.frame(slot);
      return this.pool.memory.subarray(frame + (index === 0 ? start : 0), frame + (index === last ? end - last * pageBytes : pageBytes));
    });
    return this.replicator.writePage({ allocation: allocation.guid, virtualPage: firstPage, version, pageBytes, offset: start, length: end - start, data });
  }

  private queueDestage(slot: number): void {
    if (this.table.queuedForDestage(slot)) return;
    this.table.setQueuedForDestage(slot, true);
    this.table.dequeue(slot);
    this.destageQueue.push(slot);
    if (this.idleTick === null) this.armIdleDestage();
  }

  /**
   * No more idle destage (a fenced node must not write to the disks, which belong to the new
   * epoch; a stopping one flushes by itself).
   */
  stopIdleDestage(): void {
    this.idleDestageStopped = true;
    this.idleTick?.();
    this.idleTick = null;
  }

  private armIdleDestage(): void {
    const idle = this.options.idleDestage;
    if (idle === undefined || this.idleDestageStopped) return;
    this.idleTick = idle.clock.setTimer(idle.ms, () => {
      this.idleTick = null;
      const quiet = !this.modifiedSinceTick;
      this.modifiedSinceTick = false;
      // After a failure the next flush or watermark pass retries (and reports it): not every tick.
      if (quiet && this.destaging === null && this.destageFailure === null && this.destageQueue.length > 0) {
        const batchPages = Math.max(1, Math.floor(DESTAGE_BATCH_BYTES / this.batchPageBytes()));
        this.destageInBackground(Math.max(0, this.destageQueue.length - batchPages), true);
      }
      if (this.destageQueue.length > 0) this.armIdleDestage();
    });
  }

  private paceClock(): Clock {
    return this.options.pacedDestage?.clock ?? systemClock;
  }

  /**
   * Between two batches of a watermark pass: wait `ratio` times as long as the batch took while the
   * queue is at most the high watermark, less the further it is above it, not at all at twice it
   * (past that the destage takes what it needs, until writes wait at maxDirtyPages). No wait either
   * once the pass was hurried or is done.
   */
  private async pause(goal: number, batchMs: number): Promise<void> {
    const pacing = this.options.pacedDestage;
    const high = this.options.highWatermarkPages;
    const queued = this.destageQueue.length;
    if (!pacing || this.hurried || queued <= goal || queued >= 2 * high) return;
    // A proportional share: a writer that outruns the paced destage makes it speed up as the
    // dirty set grows, instead of leaving it at one pace until the dirty set reaches the full-speed line.
    const share = Math.min(1, (2 * high - queued) / high);
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.paceRelease = null;
        resolve();
      };
      const cancel = pacing.clock.setTimer(Math.max(1, batchMs * pacing.ratio * share), done);
      this.paceRelease = () => {
        cancel();
        done();
      };
    });
  }

  /** The running pass goes on without pauses (a flush or a frame waits for it). */
  private hurry(): void {
    if (this.destaging === null) return;
    this.hurried = true;
    this.paceRelease?.();
  }

  /** Background destaging reports failures to the next flush instead of crashing the process. */
  private destageInBackground(goal: number, sortFirst = false, paced = false): void {
    this.destage(goal, sortFirst, paced).catch((error: Error) => {
      this.destageFailure = error;
    });
  }

  /**
   * Destages queued pages until at most `goal` remain; one pass at a time. `sortFirst`: in address
   * order even for one batch (an idle pass's batch then covers a narrow range of the array).
   */
  private destage(goal: number, sortFirst = false, paced = false): Promise<void> {
    if (this.destaging) return this.destaging;
    const table = this.table;
    this.destaging = (async () => {
      // A deep queue of scattered pages (random writes) is destaged in address order: each batch then
      // covers a narrow range of the array, so the destager merges neighbours into longer writes and
      // a batch's raid5 updates share stripes (and their locks, bitmap regions and cached pages).
      const sort = sortFirst || this.destageQueue.length - goal > DESTAGE_BATCH_BYTES / this.batchPageBytes();
      while (this.destageQueue.length > goal) {
        // Before every batch, not once per pass: writes keep queueing pages (in the order they come,
        // scattered) while a pass runs, and a pass that cannot catch up would otherwise reach them
        // in that order, a batch spread over the whole volume (measured: 2048 pages over 65536,
        // one run per stripe, where the sorted queue gave runs that share stripes).
        if (sort) this.sortDestageQueue();
        // Bounded batches: the copy into the storage stack is synchronous, and one pass over a
        // deep queue would hold the event loop (and every acknowledgement) for tens of milliseconds.
        const batchStarted = this.paceClock().now();
        const batch = this.destageQueue.splice(0, Math.min(this.destageQueue.length - goal, Math.max(1, Math.floor(DESTAGE_BATCH_BYTES / this.batchPageBytes()))));
        this.pagesInBatch = batch.length;
        this.destageCursor = this.arrayBlockOf(batch[batch.length - 1] as number) + 1;
        // A copy: the frame may be written again while this version travels to the disks. One
        // buffer for the batch, cut into views, not one allocation per page: thousands of small
        // external buffers a second made V8 run mark-compact collections back to back.
        const copies = this.copyPages(batch, this.takeBatchBuffer(), true);
        // What each slot held when the batch was cut: a dirty page is never dropped or replaced,
        // but the slot is checked again after the await all the same.
        const owners = batch.map((slot) => this.ownerOf(slot));
        const virtualPages = batch.map((slot) => table.virtualPage[slot] as number);
        const generations = batch.map((slot) => table.generation[slot] as number);
        let at = 0;
        const versions = batch.map((slot, index) => {
          const { arrayOffset, pageBytes } = owners[index] as Allocation;
          table.setQueuedForDestage(slot, false);
          this.store.enqueueBlocks(arrayOffset + (virtualPages[index] as number) * pageBytes, copies.subarray(at, at + pageBytes));
          at += pageBytes;
          return table.version[slot] as number;
        });
        const same = (index: number): boolean => table.generation[batch[index] as number] === generations[index] && table.owner[batch[index] as number] !== NONE;
        try {
          await this.store.flush();
        } catch (error) {
          // Still dirty: back in the queue (in front), for the next pass or flush to try again.
          const back = batch.filter((_, index) => same(index));
          for (const slot of back) table.setQueuedForDestage(slot, true);
          this.destageQueue.unshift(...back);
          this.pagesInBatch = 0;
          // Writes waiting for room would wait for a destage nobody retries: they fail, as a flush does.
          this.failDirtyWaiters(error as Error);
          throw error;
        }
        this.pagesInBatch = 0;
        this.destageFailure = null;
        if (copies.buffer.byteLength === DESTAGE_BATCH_BYTES) this.spareBatchBuffer = Buffer.from(copies.buffer, 0, DESTAGE_BATCH_BYTES);
        batch.forEach((slot, index) => {
          if (!same(index)) return;
          const version = versions[index] as number;
          table.cleanVersion[slot] = Math.max(table.cleanVersion[slot] as number, version);
          if (table.version[slot] === version) table.setMirrored(slot, false);
          if (!table.queuedForDestage(slot)) table.enqueue(slot);
        });
        this.announceClean(owners, virtualPages, versions);
        this.wakeFrameWaiters();
        this.wakeDirtyWaiters();
        if (paced) await this.pause(goal, this.paceClock().now() - batchStarted);
      }
    })().finally(() => {
      this.destaging = null;
      this.hurried = false;
      // A pass with a goal above the bound (an idle one) ended: writes waiting for room need another.
      if (this.dirtyWaiters.length > 0) {
        this.wakeDirtyWaiters();
        if (this.dirtyWaiters.length > 0 && this.destageQueue.length > 0) this.destageForRoom();
      }
    });
    return this.destaging;
  }

  /**
   * Page clean for a destaged batch: one message per stretch of consecutive pages of one
   * allocation at one version (a run released together and queued together), not one per page.
   */
  private announceClean(owners: readonly Allocation[], virtualPages: readonly number[], versions: readonly number[]): void {
    let start = 0;
    for (let i = 1; i <= owners.length; i++) {
      const continues = i < owners.length && owners[i] === owners[start] && virtualPages[i] === (virtualPages[start] as number) + (i - start) && versions[i] === versions[start] && i - start < MAX_RUN_BYTES / FRAME_BYTES;
      if (continues) continue;
      this.replicator.pageClean((owners[start] as Allocation).guid, virtualPages[start] as number, versions[start] as number, i - start);
      start = i;
    }
  }

  private takeBatchBuffer(): Buffer | null {
    const spare = this.spareBatchBuffer;
    this.spareBatchBuffer = null;
    return spare;
  }

  private allocationOf(guid: string, virtualPage: number): Allocation {
    const allocation = this.allocations.get(guid);
    if (!allocation) throw new Error(`unknown allocation ${guid}`);
    if (!Number.isInteger(virtualPage) || virtualPage < 0 || virtualPage >= allocation.sizeBytes / allocation.pageBytes) {
      throw new RangeError(`page ${virtualPage} is outside allocation ${guid}`);
    }
    return allocation;
  }

  /** The allocation whose page the slot holds. */
  private ownerOf(slot: number): Allocation {
    return this.allocationsByNumber.get(this.table.owner[slot] as number) as Allocation;
  }

  /** The page's bytes, as a view of the pool (valid while the caller holds its lock). */
  private view(slot: number, pageBytes: number): Buffer {
    const frame = this.table.frame(slot);
    return this.pool.memory.subarray(frame, frame + pageBytes);
  }

  /**
   * Returns the page resident and locked. The lock is taken in the same synchronous step that finds
   * the page unlocked, so the replacement queue can never take a page between "found" and "locked".
   * A conflicting lock parks the caller on the page; a full pool parks it in the paging queue.
   */
  private async acquire(allocation: Allocation, virtualPage: number, mode: 'read' | 'write', pageIn: boolean): Promise<number> {
    const table = this.table;
    for (;;) {
      const existing = allocation.pages.get(virtualPage);
      if (existing !== undefined) {
        const loading = table.loading(existing);
        if (loading) {
          await loading.catch(() => undefined);
          continue;
        }
        const free = mode === 'read' ? !table.writer(existing) : !table.writer(existing) && table.readers[existing] === 0;
        if (free) {
          if (mode === 'read') table.readers[existing]++;
          else table.setWriter(existing, true);
          table.touch(existing);
          return existing;
        }
        await new Promise<void>((resolve) => table.wait(existing, resolve));
        continue;
      }
      const frame = this.pool.allocate(allocation.pageBytes) ?? this.replaceOne(allocation.pageBytes);
      if (frame === null) {
        // Paging queue: destage makes dirty pages replaceable; every released frame retries.
        if (this.destageQueue.length > 0) this.destageInBackground(0);
        this.hurry();
        await new Promise<void>((resolve) => this.frameWaiters.push(resolve));
        continue;
      }
      const slot = this.residentPage(allocation, virtualPage, frame, mode, pageIn);
      if (table.unfilled(slot)) return slot;
      const offset = allocation.arrayOffset + virtualPage * allocation.pageBytes;
      const view = this.view(slot, allocation.pageBytes);
      if (this.store.readKnown?.(offset, view)) return slot;
      const generation = table.generation[slot];
      const loading = this.store.readBlocks(offset, view).finally(() => {
        if (table.generation[slot] === generation) table.setLoading(slot, null);
      });
      table.setLoading(slot, loading);
      try {
        await loading;
      } catch (error) {
        // Locked for this caller since it was installed: still this page.
        this.drop(allocation, virtualPage, slot);
        throw error;
      }
      return slot;
    }
  }

  /**
   * A new resident page in `frame`, locked for its creator from the start: a page being paged in
   * for someone can never be replaced before that someone has used it (which would make two
   * callers evict each other's pages forever, all in microtasks when the cache answers at once).
   * Mode null: no one waits for it (a clean page installed from elsewhere), so it is unlocked.
   */
  private residentPage(allocation: Allocation, virtualPage: number, frame: number, mode: 'read' | 'write' | null, pageIn: boolean): number {
    const table = this.table;
    const slot = table.install(frame, allocation.number, virtualPage);
    if (mode === 'read') table.readers[slot] = 1;
    if (mode === 'write') table.setWriter(slot, true);
    // Written whole by the caller: its bytes mean nothing until that write lands.
    if (mode === 'write' && !pageIn) table.setUnfilled(slot, true);
    allocation.pages.set(virtualPage, slot);
    table.enqueue(slot);
    this.resident++;
    return slot;
  }

  /** Takes a page out of memory (its bytes are not worth keeping) and lets waiters retry. */
  private drop(allocation: Allocation, virtualPage: number, slot: number): void {
    allocation.pages.delete(virtualPage);
    const waiting = this.table.remove(slot);
    this.resident--;
    this.pool.free(this.table.frame(slot));
    if (waiting) for (const resume of waiting) resume();
    this.wakeFrameWaiters();
  }

  /** Frees the least recently used clean, unlocked page big enough to hold `bytes`; null if none. */
  private replaceOne(bytes: number): number | null {
    const table = this.table;
    // A page moved to the back is met again later in this same walk, unreferenced then: the walk
    // ends after at most two passes.
    let slot = table.first();
    while (slot !== NONE) {
      const following = table.after(slot);
      if (!table.clean(slot) || !table.idle(slot)) {
        slot = following;
        continue;
      }
      if (table.secondChance(slot)) {
        // It was the last: it is the last again, and next in this walk.
        slot = following === NONE ? slot : following;
        continue;
      }
      this.resident--;
      this.ownerOf(slot).pages.delete(table.virtualPage[slot] as number);
      table.remove(slot);
      this.pool.free(table.frame(slot));
      const frame = this.pool.allocate(bytes);
      if (frame !== null) return frame;
      slot = following;
    }
    return null;
  }

  private wake(slot: number): void {
    const waiting = this.table.takeWaiters(slot);
    if (waiting) for (const resume of waiting) resume();
    this.wakeFrameWaiters();
  }

  /** A pass for writes waiting at maxDirtyPages: down to the low watermark, as a watermark pass goes. */
  private destageForRoom(): void {
    this.destageInBackground(Math.min(this.options.lowWatermarkPages, (this.options.maxDirtyPages as number) - 1));
  }

  private wakeDirtyWaiters(): void {
    if (this.dirtyWaiters.length === 0 || this.destageQueue.length + this.pagesInBatch >= (this.options.maxDirtyPages ?? Infinity)) return;
    const waiters = this.dirtyWaiters;
    this.dirtyWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  private failDirtyWaiters(error: Error): void {
    const waiters = this.dirtyWaiters;
    this.dirtyWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  private wakeFrameWaiters(): void {
    if (this.frameWaiters.length === 0) return;
    const waiters = this.frameWaiters;
    this.frameWaiters = [];
    for (const resume of waiters) resume();
  }

  private batchPageBytes(): number {
    const first = this.destageQueue[0];
    return first === undefined ? 4096 : this.ownerOf(first).pageBytes;
  }

  /**
   * Sorts the destage queue by array offset, circularly from `destageCursor` (where the last batch
   * ended: an elevator, so pages low in the array do not overtake the rest for good while writes
   * keep coming), without a comparator (one native sort of numbers): the key is the entry's
   * position from the cursor scaled above its index. Left alone when already in order (a
   * sequential writer's queue).
   */
  private sortDestageQueue(): void {
    const queue = this.destageQueue;
    // A cursor past the bound below (arrays of 16 TiB and more) would make negative keys.
    const cursor = this.destageCursor < 2 ** 32 ? this.destageCursor : 0;
    const keyOf = (slot: number): number => {
      const block = this.arrayBlockOf(slot);
      return block >= cursor ? block - cursor : block - cursor + 2 ** 32;
    };
    let sorted = true;
    for (let index = 1; index < queue.length && sorted; index++) sorted = keyOf(queue[index - 1] as number) <= keyOf(queue[index] as number);
    const scale = 2 ** Math.ceil(Math.log2(queue.length + 1));
    // Keys times the scale must stay exact doubles (below 2^53): arrays up to 2^32 blocks (16 TiB) by 2^20 entries.
    if (sorted || scale > 2 ** 20) return;
    const keys = new Float64Array(queue.length);
    for (let index = 0; index < queue.length; index++) {
      if (this.arrayBlockOf(queue[index] as number) >= 2 ** 32) return;
      keys[index] = keyOf(queue[index] as number) * scale + index;
    }
    keys.sort();
    const before = queue.slice();
    for (let index = 0; index < keys.length; index++) queue[index] = before[(keys[index] as number) % scale] as number;
  }

  /** The array block (4 KiB) where a slot's page starts. */
  private arrayBlockOf(slot: number): number {
    const owner = this.ownerOf(slot);
    return (owner.arrayOffset + (this.table.virtualPage[slot] as number) * owner.pageBytes) / FRAME_BYTES;
  }

  /**
   * The pages' bytes, one after the other: in the front of `reuse` when they fit in it, else in a
   * new buffer (a destage batch's own when they could fill one, so the next batch can use it again).
   */
  private copyPages(slots: readonly number[], reuse: Buffer | null = null, batch = false): Buffer {
    let bytes = 0;
    for (const slot of slots) bytes += this.ownerOf(slot).pageBytes;
    let copies: Buffer;
    if (reuse !== null && bytes <= reuse.length) copies = reuse.subarray(0, bytes);
    else if (batch && bytes <= DESTAGE_BATCH_BYTES && bytes > DESTAGE_BATCH_BYTES / 2) copies = Buffer.allocUnsafeSlow(DESTAGE_BATCH_BYTES).subarray(0, bytes);
    else copies = Buffer.allocUnsafe(bytes);
    let at = 0;
    for (const slot of slots) {
      const frame = this.table.frame(slot);
      at += this.pool.memory.copy(copies, at, frame, frame + this.ownerOf(slot).pageBytes);
    }
    return copies;
  }
}
