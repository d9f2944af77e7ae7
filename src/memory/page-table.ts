// The page table of one memory manager: the state of every resident page, kept in typed arrays
// indexed by the page's frame (its slot: frame offset / FRAME_BYTES), not in one object per page.
//
// Why: a page object with its frame view, wait list and the map and queue entries that pointed at
// it came to about 350 bytes of JavaScript heap per 4 KiB page. A 4 GiB pool held some 370 MB of
// such objects, and every full collection walked all of them (a forced one took 200–485 ms there,
// up to half the failover budget); young collections that promoted new pages during a cold
// read or write took 2–10 ms each. Typed arrays live outside the heap and are never traced: about
// 50 bytes per 4 KiB frame, whatever the pool.
//
// The replacement queue (resident pages not waiting for destage, in the order they entered it) is
// a doubly linked list threaded through two of the arrays, so adding, removing and moving a page
// costs no allocation either. Wait lists and page-in promises exist for few pages at a time and
// stay in maps keyed by slot.
import { FRAME_BYTES } from './frame-pool.js';

/** No page: an empty slot, or the end of the replacement queue. */
export const NONE = -1;

const WRITER = 1;
const MIRRORED = 2;
const QUEUED_FOR_DESTAGE = 4;
const UNFILLED = 8;
const REFERENCED = 16;
const IN_QUEUE = 32;
const LOADING = 64;

export class PageTable {
  /** The allocation number of the page in the slot, NONE when the slot holds no page (or is not a page's first frame). */
  readonly owner: Int32Array;
  readonly virtualPage: Float64Array;
  readonly readers: Int32Array;
  /** The page's version, and the newest version known to be on the disks. */
  readonly version: Float64Array;
  readonly cleanVersion: Float64Array;
  /**
   * Counts the pages a slot has held: a batch that keeps slots across an await (destage) tells by
   * it whether the slot still holds the same page.
   */
  readonly generation: Uint32Array;
  private readonly flags: Uint8Array;
  private readonly next: Int32Array;
  private readonly previous: Int32Array;
  private head = NONE;
  private tail = NONE;
  /** Requests parked on a page's lock (the page's part of the paging queue). */
  private readonly waiters = new Map<number, Array<() => void>>();
  /** Settles when the page's bytes are in its frame. */
  private readonly loads = new Map<number, Promise<void>>();

  constructor(poolBytes: number) {
    const slots = poolBytes / FRAME_BYTES;
    this.owner = new Int32Array(slots).fill(NONE);
    this.virtualPage = new Float64Array(slots);
    this.readers = new Int32Array(slots);
    this.version = new Float64Array(slots);
    this.cleanVersion = new Float64Array(slots);
    this.generation = new Uint32Array(slots);
    this.flags = new Uint8Array(slots);
    this.next = new Int32Array(slots).fill(NONE);
    this.previous = new Int32Array(slots).fill(NONE);
  }

  /** A new page in `frame`'s slot, unlocked, version 0, not in the replacement queue. */
  install(frame: number, owner: number, virtualPage: number): number {
    const slot = frame / FRAME_BYTES;
    this.owner[slot] = owner;
    this.virtualPage[slot] = virtualPage;
    this.readers[slot] = 0;
    this.version[slot] = 0;
    this.cleanVersion[slot] = 0;
    this.flags[slot] = 0;
    this.generation[slot] = ((this.generation[slot] as number) + 1) >>> 0;
    return slot;
  }

  /** Empties the slot: out of the replacement queue, its wait list handed to the caller (to resume). */
  remove(slot: number): Array<() => void> | undefined {
    this.dequeue(slot);
    this.owner[slot] = NONE;
    this.flags[slot] = 0;
    this.loads.delete(slot);
    const waiting = this.waiters.get(slot);
    this.waiters.delete(slot);
    return waiting;
  }

  frame(slot: number): number {
    return slot * FRAME_BYTES;
  }

  /** Resident, loaded, not write-locked and not taken for an overwrite still to land: readable now. */
  readable(slot: number): boolean {
    return ((this.flags[slot] as number) & (WRITER | LOADING | UNFILLED)) === 0;
  }

  /** On the disks and not queued for destage. */
  clean(slot: number): boolean {
    return this.cleanVersion[slot] === this.version[slot] && !this.queuedForDestage(slot);
  }

  /** Neither locked, nor loading, nor awaited: the replacement queue may take it. */
  idle(slot: number): boolean {
    return this.readers[slot] === 0 && ((this.flags[slot] as number) & (WRITER | LOADING)) === 0 && !this.waiters.has(slot);
  }

  writer(slot: number): boolean {
    return ((this.flags[slot] as number) & WRITER) !== 0;
  }

  setWriter(slot: number, on: boolean): void {
    this.set(slot, WRITER, on);
  }

  mirrored(slot: number): boolean {
    return ((this.flags[slot] as number) & MIRRORED) !== 0;
  }

  setMirrored(slot: number, on: boolean): void {
    this.set(slot, MIRRORED, on);
  }

  queuedForDestage(slot: number): boolean {
    return ((this.flags[slot] as number) & QUEUED_FOR_DESTAGE) !== 0;
  }

  setQueuedForDestage(slot: number, on: boolean): void {
    this.set(slot, QUEUED_FOR_DESTAGE, on);
  }

  unfilled(slot: number): boolean {
    return ((this.flags[slot] as number) & UNFILLED) !== 0;
  }

  setUnfilled(slot: number, on: boolean): void {
    this.set(slot, UNFILLED, on);
  }

  /** Used since the replacement queue last passed it (its second chance). */
  touch(slot: number): void {
    this.flags[slot] = (this.flags[slot] as number) | REFERENCED;
  }

  loading(slot: number): Promise<void> | null {
    return ((this.flags[slot] as number) & LOADING) === 0 ? null : (this.loads.get(slot) as Promise<void>);
  }

  setLoading(slot: number, load: Promise<void> | null): void {
    this.set(slot, LOADING, load !== null);
    if (load === null) this.loads.delete(slot);
    else this.loads.set(slot, load);
  }

  /** Parks `resume` on the page until its lock changes. */
  wait(slot: number, resume: () => void): void {
    const waiting = this.waiters.get(slot);
    if (waiting) waiting.push(resume);
    else this.waiters.set(slot, [resume]);
  }

  /** The page's wait list, now empty: the caller resumes them. */
  takeWaiters(slot: number): Array<() => void> | undefined {
    const waiting = this.waiters.get(slot);
    if (waiting) this.waiters.delete(slot);
    return waiting;
  }

  // The replacement queue.

  inQueue(slot: number): boolean {
    return ((this.flags[slot] as number) & IN_QUEUE) !== 0;
  }

  /** To the back of the replacement queue, unless it is in it already. */
  enqueue(slot: number): void {
    if (this.inQueue(slot)) return;
    this.set(slot, IN_QUEUE, true);
    this.previous[slot] = this.tail;
    this.next[slot] = NONE;
    if (this.tail === NONE) this.head = slot;
    else this.next[this.tail] = slot;
    this.tail = slot;
  }

  dequeue(slot: number): void {
    if (!this.inQueue(slot)) return;
    this.set(slot, IN_QUEUE, false);
    const before = this.previous[slot] as number;
    const after = this.next[slot] as number;
    if (before === NONE) this.head = after;
    else this.next[before] = after;
    if (after === NONE) this.tail = before;
    else this.previous[after] = before;
  }

  /** The front of the replacement queue, NONE when it is empty. */
  first(): number {
    return this.head;
  }

  /** The page after `slot` in the replacement queue, NONE at its end. */
  after(slot: number): number {
    return this.next[slot] as number;
  }

  /**
   * The second chance: a page used since the queue last passed it goes to the back, unreferenced,
   * and true is returned; false for a page not used since (a victim).
   */
  secondChance(slot: number): boolean {
    if (((this.flags[slot] as number) & REFERENCED) === 0) return false;
    this.set(slot, REFERENCED, false);
    this.dequeue(slot);
    this.enqueue(slot);
    return true;
  }

  private set(slot: number, flag: number, on: boolean): void {
    this.flags[slot] = on ? (this.flags[slot] as number) | flag : (this.flags[slot] as number) & ~flag;
  }
}
