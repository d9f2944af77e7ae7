// The members of one array and everything stored on each of them besides data: superblocks, the
// write-intent bitmap and the checksum tables. The array's I/O paths ask this class which members
// they may use and tell it which blocks they changed; it keeps the on-disk metadata in step.
//
// Metadata pages are written through a coalescing writer: concurrent updates of one page share one
// write that starts after the last of them, so a slow early write can never overwrite a newer page.
import { StorageError } from '../core/index.js';
import type { Logger } from '../observe/index.js';
import { crc32c } from '@node-rs/crc32';
import { blockMatches, ChecksumTable, CHECKSUM_PAGE_BYTES, entryOf } from './checksum-table.js';
import { BLOCK_BYTES, type Geometry, type RaidLevel } from './layout.js';
import { WriteRefusedError, type MemberDevice } from './member.js';
import { encodeSuperblock, superblockCopyOffset, type MemberState, type Superblock } from './superblock.js';
import { BITMAP_PAGE_BYTES, WriteIntentBitmap } from './write-intent-bitmap.js';

export interface Slot {
  readonly index: number;
  path: string;
  device: MemberDevice | null;
  state: MemberState;
  /** Why the member is not active, for status and logs. */
  reason: string;
  checksums: ChecksumTable | null;
  /** Data-area bytes already rebuilt, while `state` is 'rebuilding'. */
  rebuildPositionBytes: number;
  readErrors: number;
  repairedBlocks: number;
}

/** What stays the same on every member of the array (the superblock minus per-member fields). */
export type ArrayIdentity = Omit<Superblock, 'memberIndex' | 'memberStates' | 'eventCounter' | 'clean' | 'rebuildPositionBytes'>;

export class ArrayFailedError extends StorageError {
  override name = 'ArrayFailedError';
}

/** Which failures a level survives: raid1 needs one copy, raid10 one per pair, raid5 all but one. */
export function survives(level: RaidLevel, usable: boolean[]): boolean {
  if (level === 'raid1') return usable.some(Boolean);
  if (level === 'raid10') {
    for (let pair = 0; pair < usable.length; pair += 2) if (!usable[pair] && !usable[pair + 1]) return false;
    return true;
  }
  return usable.filter((ok) => !ok).length <= 1;
}

export class MemberSet {
  eventCounter: number;
  clean: boolean;
  readonly bitmap: WriteIntentBitmap;
  private superblockWrite: Promise<void> = Promise.resolve();
  private readonly pageWrites = new Map<string, { running: Promise<void>; next: Promise<void> | null }>();
  private readonly dirtyChecksumPages: Array<Set<number>>;
  /** Regions whose set bit is known to be on disk: writes to them need no bitmap write. */
  private readonly persistedDirty = new Set<number>();
  /** Told of each member taken out of service (the node's `ftvm events`), after the log line. */
  onFailed: (index: number, path: string, reason: string) => void = () => undefined;

  constructor(
    readonly identity: ArrayIdentity,
    readonly slots: Slot[],
    eventCounter: number,
    clean: boolean,
    private readonly logger: Logger,
    /** The bitmap slot this node writes (one per node, md-cluster style). */
    readonly bitmapSlot = 0,
  ) {
    this.eventCounter = eventCounter;
    this.clean = clean;
    this.bitmap = new WriteIntentBitmap(identity.bitmapRegionBytes, identity.memberDataBytes);
    this.dirtyChecksumPages = slots.map(() => new Set<number>());
  }

  get geometry(): Geometry {
    const { level, memberCount, chunkBytes, memberDataBytes } = this.identity;
    return { level, memberCount, chunkBytes, memberDataBytes };
  }

  /** May data at `memberOffset..+length` be read from this member? */
  readable(index: number, memberOffset: number, lengthBytes: number): boolean {
    const slot = this.slots[index] as Slot;
    if (slot.device === null) return false;
    if (slot.state === 'active') return true;
    return slot.state === 'rebuilding' && memberOffset + lengthBytes <= slot.rebuildPositionBytes;
  }

  /** Writes go to active members and to one being rebuilt (the rebuild would rewrite the same bytes). */
  writable(index: number): boolean {
    const slot = this.slots[index] as Slot;
    return slot.device !== null && (slot.state === 'active' || slot.state === 'rebuilding');
  }

  /** Whether the array would still hold all its data if `member` were taken out too. */
  survivesWithout(member: number): boolean {
    return survives(this.identity.level, this.slots.map((slot) => slot.device !== null && slot.state === 'active' && slot.index !== member));
  }

  /** Whether the array still holds all its data with the members that are active now. */
  get intact(): boolean {
    return survives(this.identity.level, this.slots.map((slot) => slot.device !== null && slot.state === 'active'));
  }

  /**
   * Takes a member out of service; the array goes on degraded if its level allows. A refused write
   * (WriteRefusedError) is thrown on instead: a node fenced for a moment must not fail healthy
   * members (cluster simulation, seed 121: two members failed by a late lease renewal).
   */
  async markFailed(index: number, cause: string | Error): Promise<void> {
    if (cause instanceof WriteRefusedError) throw cause;
    const reason = typeof cause === 'string' ? cause : cause.message;
    const slot = this.slots[index] as Slot;
    if (slot.state === 'failed' || slot.state === 'missing') return;
    slot.state = 'failed';
    slot.reason = reason;
    this.logger.error(`raid member ${index} (${slot.path}) failed: ${reason}`);
    this.onFailed(index, slot.path, reason);
    if (!this.intact) this.logger.error('raid array has lost more members than its level tolerates: I/O fails with EIO');
    await this.writeSuperblocks().catch((error: Error) => this.logger.error(`superblock update failed: ${error.message}`));
  }

  /** Bumps the event counter and writes the superblock to every member that has a device. */
  writeSuperblocks(): Promise<void> {
    const run = this.superblockWrite.then(() => this.writeSuperblocksNow());
    this.superblockWrite = run.catch(() => undefined);
    return run;
  }

  private async writeSuperblocksNow(): Promise<void> {
    this.eventCounter++;
    const states = this.slots.map((slot) => slot.state);
    const rebuilding = this.slots.find((slot) => slot.state === 'rebuilding');
    const writes = this.slots
      .filter((slot) => slot.device !== null && slot.state !== 'failed' && slot.state !== 'missing')
      .map(async (slot) => {
        const block = encodeSuperblock({
          ...this.identity,
          memberIndex: slot.index,
          memberStates: states,
          eventCounter: this.eventCounter,
          clean: this.clean,
          rebuildPositionBytes: rebuilding?.rebuildPositionBytes ?? 0,
        });
        const device = slot.device as MemberDevice;
        await device.write(superblockCopyOffset(this.eventCounter), block);
        await device.sync();
      });
    await Promise.all(writes);
  }

  /**
   * Records new contents of whole blocks of a member in its checksum table. The pages reach the
   * disk lazily (flushChecksumPages): until then the blocks' region stays dirty in the bitmap, and a
   * crash is followed by a resync that recomputes those checksums from the data anyway.
   */
  recordBlocks(index: number, memberOffset: number, data: Buffer): void {
    const slot = this.slots[index] as Slot;
    const table = slot.checksums;
    if (table === null) return;
    const firstBlock = memberOffset / BLOCK_BYTES;
    const blocks = data.length / BLOCK_BYTES;
    const exact = this.identity.zeroEntries;
    for (let i = 0; i < blocks; i++) {
      const block = data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      table.set(firstBlock + i, exact ? entryOf(block) : crc32c(block));
    }
    const pages = this.dirtyChecksumPages[index] as Set<number>;
    for (let page = table.pageOf(firstBlock); page <= table.pageOf(firstBlock + blocks - 1); page++) pages.add(page);
  }

  /** Writes every checksum page changed since the last call (not synced: callers sync). */
  async flushChecksumPages(): Promise<void> {
    const writes: Array<Promise<void>> = [];
    for (const slot of this.slots) {
      const pages = this.dirtyChecksumPages[slot.index] as Set<number>;
      for (const page of pages) writes.push(this.writeChecksumPage(slot.index, page));
      pages.clear();
    }
    await Promise.all(writes);
  }

  /** Blocks of `data` (read from member `index` at `memberOffset`) whose checksum disagrees. */
  badBlocks(index: number, memberOffset: number, data: Buffer): number[] {
    const table = (this.slots[index] as Slot).checksums;
    if (table === null) return [];
    const bad: number[] = [];
    const firstBlock = memberOffset / BLOCK_BYTES;
    for (let i = 0; i < data.length / BLOCK_BYTES; i++) {
      const block = data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      const entry = table.get(firstBlock + i);
      if (!(this.identity.zeroEntries ? blockMatches(block, entry) : crc32c(block) === entry)) bad.push(i);
    }
    return bad;
  }

  /**
   * Whether member `index`'s checksum table says every block of the range is zeroes: never on an
   * array whose zero entry is only a CRC (created before the rule), nor without a table.
   */
  knownZero(index: number, memberOffset: number, lengthBytes: number): boolean {
    const table = (this.slots[index] as Slot).checksums;
    return this.identity.zeroEntries && table !== null && lengthBytes > 0 && table.allZero(memberOffset / BLOCK_BYTES, lengthBytes / BLOCK_BYTES);
  }

  /**
   * Sets the bitmap bits of a range and returns once every one of them is on disk. Only bits not
   * yet known to be on disk cost a write; writers that arrive while one is on its way join it.
   */
  async markRegionsDirty(memberOffset: number, lengthBytes: number): Promise<void> {
    const pending = this.bitmap.regionsOf(memberOffset, lengthBytes).filter((region) => !this.persistedDirty.has(region));
    if (pending.length === 0) return;
    const pages = new Set<number>();
    for (const region of pending) {
      this.bitmap.set(region);
      pages.add(this.bitmap.pageOf(region));
    }
    await Promise.all([...pages].map((page) => this.writeBitmapPage(page)));
    for (const region of pending) if (this.bitmap.isSet(region)) this.persistedDirty.add(region);
  }

  /**
   * Clears bits of regions gone quiet. Their checksum pages are written and synced first: a clear
   * bit promises that data, parity and checksums of the region agree on disk. `stillQuiet` is asked
   * right before each bit is cleared (no await in between), so a write that started meanwhile keeps
   * its region dirty.
   */
  async clearRegions(regions: number[], stillQuiet: (region: number) => boolean = () => true): Promise<void> {
    await this.flushChecksumPages();
    await this.syncAll();
    const pages = new Set<number>();
    for (const region of regions) {
      if (!stillQuiet(region)) continue;
      this.persistedDirty.delete(region);
      if (this.bitmap.clear(region)) pages.add(this.bitmap.pageOf(region));
    }
    await Promise.all([...pages].map((page) => this.writeBitmapPage(page)));
  }

  async syncAll(): Promise<void> {
    await Promise.all(
      this.slots
        .filter((slot) => this.writable(slot.index))
        .map((slot) => (slot.device as MemberDevice).sync().catch((error: Error) => this.markFailed(slot.index, error))),
    );
  }

  private writeChecksumPage(index: number, page: number): Promise<void> {
    return this.coalesce(`c${index}:${page}`, async () => {
      const slot = this.slots[index] as Slot;
      if (slot.device === null || slot.checksums === null || !this.writable(index)) return;
      const bytes = slot.checksums.encodePage(page);
      try {
        await slot.device.write(this.identity.checksumOffset + page * CHECKSUM_PAGE_BYTES, bytes);
      } catch (error) {
        // As for a data write: the member is out. Its page would otherwise be forgotten, and a later
        // sync clear the region's bit over a table on disk that no longer matches its data.
        await this.markFailed(index, error as Error);
        if (!this.intact) throw new ArrayFailedError('checksum pages could not be stored with redundancy');
      }
    });
  }

  /** One key per page, always synced: a clear must never land after a later set of the same page. */
  private writeBitmapPage(page: number): Promise<void> {
    return this.coalesce(`b${page}`, async () => {
      const bytes = this.bitmap.encodePage(page);
      const offset = this.identity.bitmapOffset + this.bitmapSlot * this.identity.bitmapSlotBytes + page * BITMAP_PAGE_BYTES;
      await Promise.all(
        this.slots
          .filter((slot) => this.writable(slot.index))
          .map(async (slot) => {
            const device = slot.device as MemberDevice;
            try {
              await device.write(offset, bytes);
              await device.sync();
            } catch (error) {
              await this.markFailed(slot.index, error as Error);
            }
          }),
      );
      if (!this.intact) throw new ArrayFailedError('write-intent bitmap could not be stored with redundancy');
    });
  }

  /**
   * Runs `write` for `key` so that every caller is covered by a write that started after its call:
   * one write runs, at most one more waits, and later callers join the waiting one.
   */
  private coalesce(key: string, write: () => Promise<void>): Promise<void> {
    const entry = this.pageWrites.get(key);
    if (!entry) {
      const running = write().finally(() => this.finishPageWrite(key));
      this.pageWrites.set(key, { running, next: null });
      return running;
    }
    if (entry.next === null) {
      entry.next = entry.running.catch(() => undefined).then(() => {
        entry.running = write().finally(() => this.finishPageWrite(key));
        entry.next = null;
        return entry.running;
      });
    }
    return entry.next;
  }

  private finishPageWrite(key: string): void {
    const entry = this.pageWrites.get(key);
    if (entry && entry.next === null) this.pageWrites.delete(key);
  }
}
