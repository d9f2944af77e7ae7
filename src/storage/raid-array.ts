// A RAID array over member files: reads and writes of whole 4 KiB blocks at array offsets.
//
// Every block read from a member is checked against that member's checksum table; a block that
// fails its checksum, or a member that fails its I/O, is served from redundancy (another mirror, or
// raid5 reconstruction) and repaired in place. A raid5 stripe update holds the stripe's lock, sets
// the write-intent bit of its region (persisted before any data moves, so a crash mid-update is
// followed by a resync of that region), then writes data and parity in parallel. Partial-stripe
// updates choose read-modify-write or reconstruct-write, whichever reads fewer bytes.
//
// After an unclean stop the array serves while its dirty regions resync (resyncBehindIo): I/O that
// reaches a stripe the pass has not resynced yet resyncs it first, so nothing is read, or updated
// from parity, while a stripe's data, parity and checksums may disagree.
import { eachInFlight } from '../core/index.js';
import type { Logger } from '../observe/index.js';
import { VolumeError } from '../volume/index.js';
import { BLOCK_BYTES, dataChunksPerStripe, dataMembersOf, mapRange, parityMemberOf, arrayDataBytes, stripeDataBytes, type ChunkSpan, type Geometry } from './layout.js';
import type { MemberDevice } from './member.js';
import { ArrayFailedError, MemberSet, type Slot } from './member-set.js';
import { computeParity, reconstructMissing, updateParity, xorInto } from './parity.js';
import { ResyncBehind, resyncPass, stripesOfRegions } from './raid-maintenance.js';
import { ScratchBuffers } from './scratch-buffers.js';
import { StripeLocks } from './stripe-locks.js';

export interface RaidDependencies {
  logger: Logger;
  /** Milliseconds; injected so tests and the simulator control when bitmap bits are cleared. */
  now: () => number;
}

/**
 * A member whose blocks failed their checksum this many times is taken out of service: a few rotten
 * blocks are repaired in place, but this many means the device itself is going (md fails a device
 * after too many corrected read errors for the same reason).
 */
export const MAX_CORRECTED_READ_ERRORS = 256;

/**
 * Whole stripes written under one range lock, with one write per member: 64 stripes of 64 KiB
 * chunks are 4 MiB per member, what one destage run of a batch holds at most.
 */
export const MAX_WHOLE_STRIPES = 64;

/**
 * Runs of one stripe this close (bytes between them inside the chunk) are written as one update
 * (writeRuns): rewriting the blocks between costs their verified reads, copies and checksums; a
 * separate update its own reads, writes and completions. Measured with scripts/bench-destage: 8 KiB
 * took 25-35 % off the CPU per block of dense batches and some off sparse ones; 32 KiB saved as
 * much on dense batches but cost 15 % more than no merging on sparse ones (4 % of a range dirty).
 */
const MERGE_GAP_BYTES = 8 * 1024;

/** A region's bit is cleared once no write touched it for this long and a sync followed. */
export const BITMAP_CLEAR_DELAY_MS = 5_000;

interface RegionWriters {
  inFlight: number;
  lastWriteMs: number;
  lastWriteEpoch: number;
}

export interface MemberStatus {
  index: number;
  path: string;
  state: string;
  reason: string;
  readErrors: number;
  repairedBlocks: number;
  rebuildPositionBytes?: number;
}

export interface ArrayStatus {
  uuid: string;
  level: string;
  memberCount: number;
  chunkBytes: number;
  sizeBytes: number;
  eventCounter: number;
  state: 'optimal' | 'degraded' | 'rebuilding' | 'failed';
  dirtyRegions: number;
  members: MemberStatus[];
}

export class RaidArray {
  readonly locks = new StripeLocks();
  readonly sizeBytes: number;
  private readonly regionWriters = new Map<number, RegionWriters>();
  /** Counts finished writes: a region is quiet for a sync only if its last write ended before the sync began. */
  private writeEpoch = 0;
  private readRotation = 0;
  private stopped = false;
  /** Run once the members are closed (stop or abandon): the holder claim goes with the open files. */
  private readonly closeHooks: Array<() => Promise<void>> = [];
  /** Parity and old images of raid5 stripe writes: enough for a destage batch's writes in flight, each with a few. */
  private readonly scratch = new ScratchBuffers(64);
  /** A resync after an unclean stop that runs behind I/O; null once it is done (or when none ran). */
  private behind: ResyncBehind | null = null;
  private resyncing: Promise<void> = Promise.resolve();

  constructor(
    readonly members: MemberSet,
    readonly deps: RaidDependencies,
  ) {
    this.sizeBytes = arrayDataBytes(members.geometry);
  }

  get geometry(): Geometry {
    return this.members.geometry;
  }

  status(): ArrayStatus {
    const slots = this.members.slots;
    const rebuilding = slots.some((slot) => slot.state === 'rebuilding');
    const degraded = slots.some((slot) => slot.state !== 'active');
    return {
      uuid: this.members.identity.arrayUuid,
      level: this.members.identity.level,
      memberCount: slots.length,
      chunkBytes: this.members.identity.chunkBytes,
      sizeBytes: this.sizeBytes,
      eventCounter: this.members.eventCounter,
      state: !this.members.intact ? 'failed' : rebuilding ? 'rebuilding' : degraded ? 'degraded' : 'optimal',
      dirtyRegions: this.members.bitmap.dirtyCount,
      members: slots.map((slot) => ({
        index: slot.index,
        path: slot.path,
        state: slot.state,
        reason: slot.reason,
        readErrors: slot.readErrors,
        repairedBlocks: slot.repairedBlocks,
        ...(slot.state === 'rebuilding' ? { rebuildPositionBytes: slot.rebuildPositionBytes } : {}),
      })),
    };
  }

  /**
   * Resyncs `regions` (dirty at an unclean stop) while the array serves: a pass walks their stripes
   * in order, I/O resyncs a stripe it reaches first. Their bits stay set until the pass is done; a
   * stop before that leaves them set and the array unclean, for the next assembly to resync. Resolves
   * when the pass ends; a failed pass leaves the rest to be resynced on demand and at the next assembly.
   */
  resyncBehindIo(regions: readonly number[], onProgress: (doneBytes: number, totalBytes: number) => void = () => undefined): Promise<void> {
    const behind = new ResyncBehind(this, stripesOfRegions(this, regions), new Set(regions));
    this.behind = behind;
    const pass = this.resyncing.then(() => resyncPass(this, behind, regions, onProgress));
    this.resyncing = pass.then(
      () => {
        if (this.behind === behind && !behind.stopping) this.behind = null;
      },
      () => undefined,
    );
    return pass;
  }

  /** Resolves once no resync runs behind I/O (scrub and rebuild wait for it). */
  async resynced(): Promise<void> {
    await this.resyncing;
  }

  /** Whether this process wrote into `region` since it opened the array (its bit is the quiet rule's then). */
  writtenSinceOpen(region: number): boolean {
    return this.regionWriters.has(region);
  }

  /** Before I/O on `[offset, offset + length)`: its stripes the resync has not reached are resynced first. */
  private async resyncFirst(behind: ResyncBehind, offset: number, length: number): Promise<void> {
    const stripeBytes = stripeDataBytes(this.geometry);
    await behind.resyncRange(Math.floor(offset / stripeBytes), Math.floor((offset + length - 1) / stripeBytes));
  }

  // ---- reads ----

  /** Reads whole blocks at a block-aligned array offset. */
  async read(offset: number, into: Buffer): Promise<void> {
    this.checkRange(offset, into.length);
    if (this.behind) await this.resyncFirst(this.behind, offset, into.length);
    const spans = mapRange(this.geometry, offset, into.length);
    await Promise.all(
      spans.map((span) =>
        this.locks.withShared(span.stripe, () => this.readSpan(span, into.subarray(span.arrayOffset - offset, span.arrayOffset - offset + span.lengthBytes))),
      ),
    );
  }

  /**
   * Whether every block of the range is zeroes by the checksum table of the member a read would
   * take it from: then a reader needs no I/O (readVerified's shortcut, without the read). Never
   * while a resync runs behind I/O (its stripes' tables are not the truth yet) or once stopped. The
   * table changes only when a write has landed, so a concurrent write is either seen whole or not.
   */
  knownZero(offset: number, lengthBytes: number): boolean {
    if (this.stopped || this.behind !== null || offset % BLOCK_BYTES !== 0 || lengthBytes % BLOCK_BYTES !== 0 || lengthBytes <= 0) return false;
    if (offset < 0 || offset + lengthBytes > this.sizeBytes) return false;
    const geometry = this.geometry;
    const stripeBytes = stripeDataBytes(geometry);
    const end = offset + lengthBytes;
    for (let at = offset; at < end; ) {
      // As mapRange, without its objects: this runs once per page-in.
      const stripe = Math.floor(at / stripeBytes);
      const dataIndex = Math.floor((at - stripe * stripeBytes) / geometry.chunkBytes);
      const offsetInChunk = at - stripe * stripeBytes - dataIndex * geometry.chunkBytes;
      const length = Math.min(geometry.chunkBytes - offsetInChunk, end - at);
      const memberOffset = stripe * geometry.chunkBytes + offsetInChunk;
      if (!this.spanKnownZero(stripe, dataIndex, memberOffset, length)) return false;
      at += length;
    }
    return true;
  }

  /** The span's test: the first readable copy (raid5: the data member) passes readVerified's. */
  private spanKnownZero(stripe: number, dataIndex: number, memberOffset: number, length: number): boolean {
    const geometry = this.geometry;
    // A missing raid5 data member is reconstructed, which reads: only the data member counts.
    const first = geometry.level === 'raid5' ? (parityMemberOf(geometry, stripe) + 1 + dataIndex) % geometry.memberCount : geometry.level === 'raid1' ? 0 : 2 * dataIndex;
    const last = geometry.level === 'raid1' ? geometry.memberCount - 1 : geometry.level === 'raid10' ? first + 1 : first;
    for (let member = first; member <= last; member++) {
      if (this.members.readable(member, memberOffset, length)) return this.zeroByTables(member, memberOffset, length);
    }
    return false;
  }

  /**
   * readVerified's test: the member's table says the range is zeroes, and so does every other
   * readable copy of a mirror (copies that disagree are read, and the bad one repaired). Never while
   * a resync runs behind I/O: reads resync their stripes first, but rebuild and reconstruct inputs
   * do not, and a stripe not resynced yet may hold data whose checksum page never reached the disk.
   */
  private zeroByTables(member: number, memberOffset: number, length: number): boolean {
    if (this.behind !== null || !this.members.knownZero(member, memberOffset, length)) return false;
    const level = this.geometry.level;
    if (level === 'raid5') return true;
    const first = level === 'raid1' ? 0 : member - (member % 2);
    const last = level === 'raid1' ? this.geometry.memberCount - 1 : first + 1;
    for (let other = first; other <= last; other++) {
      if (other !== member && this.members.readable(other, memberOffset, length) && !this.members.knownZero(other, memberOffset, length)) return false;
    }
    return true;
  }

  private async readSpan(span: ChunkSpan, into: Buffer): Promise<void> {
    if (this.geometry.level === 'raid5') {
      await this.readMemberRange(span.stripe, span.members[0] as number, span.memberOffset, span.lengthBytes, into);
      return;
    }
    await this.readMirrored(span, into);
  }

  /** raid1/raid10: one copy, spread over the mirrors; bad blocks are taken from the others and repaired. */
  private async readMirrored(span: ChunkSpan, into: Buffer): Promise<void> {
    const copies = span.members.filter((member) => this.members.readable(member, span.memberOffset, span.lengthBytes));
    if (copies.length === 0) throw this.lost(`no readable copy of array offset ${span.arrayOffset}`);
    const first = copies[this.readRotation++ % copies.length] as number;
    const ordered = [first, ...copies.filter((member) => member !== first)];
    let bad: number[] | null = null;
    for (const member of ordered) {
      const result = await this.readVerified(member, span.memberOffset, into);
      if (result === null) continue;
      if (bad === null) {
        bad = result;
        if (bad.length === 0) return;
        await this.repairFromMirrors(span, into, member, bad, ordered);
        return;
      }
    }
    throw this.lost(`every copy of array offset ${span.arrayOffset} failed`);
  }

  /** Replaces bad blocks of `into` (read from `source`) with good copies from other mirrors. */
  private async repairFromMirrors(span: ChunkSpan, into: Buffer, source: number, bad: number[], mirrors: number[]): Promise<void> {
    for (const block of bad) {
      const memberOffset = span.memberOffset + block * BLOCK_BYTES;
      const target = into.subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES);
      let repaired = false;
      for (const other of mirrors) {
        if (other === source) continue;
        const result = await this.readVerified(other, memberOffset, target);
        if (result !== null && result.length === 0) {
          repaired = true;
          break;
        }
      }
      if (!repaired) throw this.lost(`every copy of array block at ${span.arrayOffset + block * BLOCK_BYTES} fails its checksum`);
      await this.rewriteBlock(source, memberOffset, target);
    }
  }

  /**
   * A member's bytes of one stripe chunk, verified: read directly where the member is readable and
   * its blocks pass their checksums, otherwise reconstructed from every other member (raid5).
   */
  async readMemberRange(stripe: number, member: number, memberOffset: number, lengthBytes: number, into: Buffer = Buffer.allocUnsafe(lengthBytes)): Promise<Buffer> {
    if (this.members.readable(member, memberOffset, lengthBytes)) {
      const bad = await this.readVerified(member, memberOffset, into);
      if (bad !== null && bad.length === 0) return into;
      if (bad !== null) {
        for (const block of bad) {
          const blockOffset = memberOffset + block * BLOCK_BYTES;
          const rebuilt = await this.reconstruct(stripe, member, blockOffset, BLOCK_BYTES);
          rebuilt.copy(into, block * BLOCK_BYTES);
          await this.rewriteBlock(member, blockOffset, rebuilt);
        }
        return into;
      }
    }
    (await this.reconstruct(stripe, member, memberOffset, lengthBytes)).copy(into);
    return into;
  }

  /** raid5: XOR of every other member's verified bytes at the same member offset. */
  async reconstruct(stripe: number, missing: number, memberOffset: number, lengthBytes: number): Promise<Buffer> {
    const others: Buffer[] = [];
    for (let member = 0; member < this.geometry.memberCount; member++) {
      if (member === missing) continue;
      if (!this.members.readable(member, memberOffset, lengthBytes)) {
        throw this.lost(`stripe ${stripe} cannot be reconstructed: members ${missing} and ${member} are both unavailable`);
      }
      const buffer = Buffer.allocUnsafe(lengthBytes);
      const bad = await this.readVerified(member, memberOffset, buffer);
      if (bad === null || bad.length > 0) {
        throw this.lost(`stripe ${stripe} cannot be reconstructed: member ${member} also fails at ${memberOffset}`);
      }
      others.push(buffer);
    }
    const rebuilt = Buffer.allocUnsafe(lengthBytes);
    reconstructMissing(others, rebuilt);
    return rebuilt;
  }

  /**
   * Reads a member range and checks every block. Returns the indices of blocks whose checksum
   * disagrees, or null when the member failed (it is then marked failed). A range the member's
   * checksum table says is all zeroes is filled without I/O (a never-written page's first read),
   * unless `fromDisk`: scrub must see what the disk holds there.
   */
  async readVerified(member: number, memberOffset: number, into: Buffer, fromDisk = false): Promise<number[] | null> {
    if (!fromDisk && this.zeroByTables(member, memberOffset, into.length)) {
      into.fill(0);
      return [];
    }
    const slot = this.members.slots[member] as Slot;
    try {
      await (slot.device as MemberDevice).read(this.members.identity.dataOffset + memberOffset, into);
    } catch (error) {
      await this.members.markFailed(member, error as Error);
      return null;
    }
    const bad = this.members.badBlocks(member, memberOffset, into);
    if (bad.length > 0) {
      slot.readErrors += bad.length;
      this.deps.logger.warn(`raid member ${member}: ${bad.length} block(s) at ${memberOffset} fail their checksum; repairing from redundancy`);
      if (slot.readErrors > MAX_CORRECTED_READ_ERRORS && this.members.survivesWithout(member)) {
        await this.members.markFailed(member, `${slot.readErrors} blocks failed their checksum`);
        return null;
      }
    }
    return bad;
  }

  async rewriteBlock(member: number, memberOffset: number, data: Buffer): Promise<void> {
    const slot = this.members.slots[member] as Slot;
    try {
      await (slot.device as MemberDevice).write(this.members.identity.dataOffset + memberOffset, data);
      slot.repairedBlocks += data.length / BLOCK_BYTES;
    } catch (error) {
      await this.members.markFailed(member, error as Error);
    }
  }

  // ---- writes ----

  /**
   * Writes whole blocks at a block-aligned array offset; durable only after sync(). On raid5 the
   * whole stripes of the range go together (writeWholeStripes), the partial ones at its ends stripe
   * by stripe.
   */
  async write(offset: number, data: Buffer): Promise<void> {
    this.checkRange(offset, data.length);
    if (this.behind) await this.resyncFirst(this.behind, offset, data.length);
    const geometry = this.geometry;
    if (geometry.level === 'raid5') {
      const stripeBytes = dataChunksPerStripe(geometry) * geometry.chunkBytes;
      const end = offset + data.length;
      const firstWhole = Math.ceil(offset / stripeBytes);
      const endWhole = Math.floor(end / stripeBytes);
      if (endWhole > firstWhole) {
        const parts: Array<Promise<void>> = [];
        if (firstWhole * stripeBytes > offset) parts.push(this.writeStripes(offset, data.subarray(0, firstWhole * stripeBytes - offset)));
        for (let first = firstWhole; first < endWhole; first += MAX_WHOLE_STRIPES) {
          const last = Math.min(endWhole, first + MAX_WHOLE_STRIPES) - 1;
          const piece = data.subarray(first * stripeBytes - offset, (last + 1) * stripeBytes - offset);
          parts.push(this.locks.withExclusiveRange(first, last, () => this.writeWholeStripes(first, last - first + 1, piece)));
        }
        if (endWhole * stripeBytes < end) parts.push(this.writeStripes(endWhole * stripeBytes, data.subarray(endWhole * stripeBytes - offset)));
        await Promise.all(parts);
        return;
      }
    }
    await this.writeStripes(offset, data);
  }

  /**
   * raid5, stripes `first` … `first + count - 1` written whole: parity from the new data alone,
   * nothing read, and one write per member for all of them (a member's chunks of consecutive
   * stripes lie side by side). The caller holds the stripes' locks. As in writeStripe, the regions'
   * write-intent bits are on disk before any data moves, and each member's checksums are recorded
   * once its write landed.
   */
  private async writeWholeStripes(first: number, count: number, data: Buffer): Promise<void> {
    const geometry = this.geometry;
    const chunkBytes = geometry.chunkBytes;
    const chunks = dataChunksPerStripe(geometry);
    const memberOffset = first * chunkBytes;
    const length = count * chunkBytes;
    const regions = this.members.bitmap.regionsOf(memberOffset, length);
    for (const region of regions) this.beginRegionWrite(region);
    const parity = this.scratch.take(length);
    try {
      await this.members.markRegionsDirty(memberOffset, length);
      const pieces: Buffer[][] = Array.from({ length: geometry.memberCount }, () => []);
      for (let index = 0; index < count; index++) {
        const stripe = first + index;
        const stripeData = index * chunks * chunkBytes;
        const stripeParity = parity.subarray(index * chunkBytes, (index + 1) * chunkBytes);
        for (let dataIndex = 0; dataIndex < chunks; dataIndex++) {
          const chunk = data.subarray(stripeData + dataIndex * chunkBytes, stripeData + (dataIndex + 1) * chunkBytes);
          if (dataIndex === 0) stripeParity.set(chunk);
          else xorInto(stripeParity, chunk);
          (pieces[dataMembersOf(geometry, stripe, dataIndex)[0] as number] as Buffer[]).push(chunk);
        }
        (pieces[parityMemberOf(geometry, stripe)] as Buffer[]).push(stripeParity);
      }
      // writeMemberPieces never rejects: once this settles, nothing reads the parity buffer.
      await Promise.all(pieces.map((list, member) => this.writeMemberPieces(member, memberOffset, list)));
    } finally {
      for (const region of regions) this.endRegionWrite(region);
      this.scratch.give(parity);
    }
    if (!this.members.intact) throw this.lost(`stripes ${first} to ${first + count - 1} could not be written with redundancy`);
  }

  /** Consecutive pieces of one member from `memberOffset` on, as one gathered write where the device can; false (and the member failed) on error. */
  private async writeMemberPieces(member: number, memberOffset: number, pieces: readonly Buffer[]): Promise<boolean> {
    if (!this.members.writable(member)) return false;
    const device = (this.members.slots[member] as Slot).device as MemberDevice;
    const at = this.members.identity.dataOffset + memberOffset;
    try {
      if (device.writev) await device.writev(at, pieces);
      else {
        const writes: Array<Promise<void>> = [];
        let offset = at;
        for (const piece of pieces) {
          writes.push(device.write(offset, piece));
          offset += piece.length;
        }
        await Promise.all(writes);
      }
    } catch (error) {
      await this.members.markFailed(member, error as Error);
      return false;
    }
    let offset = memberOffset;
    for (const piece of pieces) {
      this.members.recordBlocks(member, offset, piece);
      offset += piece.length;
    }
    return true;
  }

  /**
   * Writes runs of whole blocks (sorted by offset, not overlapping), at most `inFlight` at once:
   * what a destage batch of scattered pages is. On raid5 the small runs that share a stripe go
   * together, one stripe update for all of them: one read per data chunk, one write per chunk and
   * one of parity over the range they span, instead of a read and two writes per run (each a trip
   * through the threadpool and a wake-up of the main thread, which is what a random 4 KiB destage
   * cost). Runs farther apart than MERGE_GAP_BYTES in a stripe are separate updates: past that,
   * the bytes read and rewritten between them cost more than the calls saved.
   */
  async writeRuns(runs: ReadonlyArray<{ offset: number; data: Buffer }>, inFlight: number): Promise<void> {
    for (const run of runs) this.checkRange(run.offset, run.data.length);
    const tasks: Array<() => Promise<void>> = [];
    const stripeBytes = stripeDataBytes(this.geometry);
    // The stripe being gathered: each of its spans with the span's bytes.
    let stripe = -1;
    let spans = new Map<ChunkSpan, Buffer>();
    const close = (): void => {
      if (spans.size === 0) return;
      const [groupStripe, groupSpans] = [stripe, spans];
      tasks.push(() => this.writeStripeGroup(groupStripe, groupSpans));
      spans = new Map();
    };
    for (const run of runs) {
      if (this.geometry.level !== 'raid5' || run.data.length >= stripeBytes) {
        close();
        tasks.push(() => this.write(run.offset, run.data));
        continue;
      }
      for (const span of mapRange(this.geometry, run.offset, run.data.length)) {
        if (span.stripe !== stripe) close();
        stripe = span.stripe;
        spans.set(span, run.data.subarray(span.arrayOffset - run.offset, span.arrayOffset - run.offset + span.lengthBytes));
      }
    }
    close();
    await eachInFlight(tasks, inFlight, (task) => task());
  }

  /** One stripe's spans from writeRuns, under its lock: near ones as one update, far ones apart. */
  private async writeStripeGroup(stripe: number, spans: ReadonlyMap<ChunkSpan, Buffer>): Promise<void> {
    if (this.behind) await this.resyncFirst(this.behind, stripe * stripeDataBytes(this.geometry), stripeDataBytes(this.geometry));
    const dataOf = (span: ChunkSpan): Buffer => spans.get(span) as Buffer;
    // Clusters by offset inside the chunk (the member range an update covers), whatever the chunk.
    const order = [...spans.keys()].sort((a, b) => a.offsetInChunk - b.offsetInChunk);
    const clusters: ChunkSpan[][] = [];
    let end = -Infinity;
    for (const span of order) {
      if (span.offsetInChunk > end + MERGE_GAP_BYTES) clusters.push([]);
      (clusters[clusters.length - 1] as ChunkSpan[]).push(span);
      end = Math.max(end, span.offsetInChunk + span.lengthBytes);
    }
    await this.locks.withExclusive(stripe, async () => {
      // Every update settles before the lock goes back: a failed one must not let the next writer of
      // this stripe in while another is still writing it (its older bytes would land last).
      const results = await Promise.allSettled(clusters.map((cluster) => this.writeStripe(stripe, cluster, dataOf)));
      for (const result of results) if (result.status === 'rejected') throw result.reason;
    });
  }

  /** Writes stripe by stripe, each under its own lock. */
  private async writeStripes(offset: number, data: Buffer): Promise<void> {
    const byStripe = new Map<number, ChunkSpan[]>();
    for (const span of mapRange(this.geometry, offset, data.length)) {
      const list = byStripe.get(span.stripe) ?? [];
      list.push(span);
      byStripe.set(span.stripe, list);
    }
    await Promise.all(
      [...byStripe.entries()].map(([stripe, spans]) =>
        this.locks.withExclusive(stripe, () => this.writeStripe(stripe, spans, (span) => data.subarray(span.arrayOffset - offset, span.arrayOffset - offset + span.lengthBytes))),
      ),
    );
  }

  private async writeStripe(stripe: number, spans: ChunkSpan[], dataOf: (span: ChunkSpan) => Buffer): Promise<void> {
    const lo = Math.min(...spans.map((span) => span.offsetInChunk));
    const hi = Math.max(...spans.map((span) => span.offsetInChunk + span.lengthBytes));
    const memberOffset = stripe * this.geometry.chunkBytes + lo;
    const regions = this.members.bitmap.regionsOf(memberOffset, hi - lo);
    for (const region of regions) this.beginRegionWrite(region);
    try {
      await this.members.markRegionsDirty(memberOffset, hi - lo);
      if (this.geometry.level === 'raid5') await this.writeParityStripe(stripe, spans, dataOf, lo, hi);
      else await Promise.all(spans.map((span) => this.writeCopies(span.members, span.memberOffset, dataOf(span))));
    } finally {
      for (const region of regions) this.endRegionWrite(region);
    }
  }

  /** Writes the same bytes to every writable member of a set; fails only if none took them. */
  private async writeCopies(members: readonly number[], memberOffset: number, data: Buffer): Promise<void> {
    const results = await Promise.all(members.map((member) => this.writeMember(member, memberOffset, data)));
    if (!results.some(Boolean)) throw this.lost(`no member could store the write at member offset ${memberOffset}`);
    if (!this.members.intact) throw this.lost('the array lost redundancy it cannot do without');
  }

  /**
   * Data + checksum pages of one member; false (and the member failed) on error. `changed`: the only
   * byte ranges of `data` whose checksums change (the rest was read, verified, from this member).
   */
  async writeMember(member: number, memberOffset: number, data: Buffer, changed?: ReadonlyArray<readonly [number, number]>): Promise<boolean> {
    if (!this.members.writable(member)) return false;
    const slot = this.members.slots[member] as Slot;
    try {
      await (slot.device as MemberDevice).write(this.members.identity.dataOffset + memberOffset, data);
      if (changed === undefined) this.members.recordBlocks(member, memberOffset, data);
      else for (const [start, end] of changed) this.members.recordBlocks(member, memberOffset + start, data.subarray(start, end));
      return true;
    } catch (error) {
      await this.members.markFailed(member, error as Error);
      return false;
    }
  }

  /**
   * One raid5 update of `spans` (a chunk may have several, apart) over the member range [lo, hi)
   * they span: each touched chunk's new image is its old bytes there with every span copied in.
   */
  private async writeParityStripe(stripe: number, spans: ChunkSpan[], dataOf: (span: ChunkSpan) => Buffer, lo: number, hi: number): Promise<void> {
    const geometry = this.geometry;
    const parity = parityMemberOf(geometry, stripe);
    const length = hi - lo;
    const memberOffset = stripe * geometry.chunkBytes + lo;
    const chunks = dataChunksPerStripe(geometry);
    const touched = new Map<number, ChunkSpan[]>();
    for (const span of spans) {
      const list = touched.get(span.dataIndex);
      if (list) list.push(span);
      else touched.set(span.dataIndex, [span]);
    }
    const covered = new Set<number>();
    for (const [dataIndex, list] of touched) {
      list.sort((a, b) => a.offsetInChunk - b.offsetInChunk);
      let at = lo;
      for (const span of list) if (span.offsetInChunk === at) at += span.lengthBytes;
      if (at === hi) covered.add(dataIndex);
    }
    const memberOf = (dataIndex: number): number => dataMembersOf(geometry, stripe, dataIndex)[0] as number;
    const rmwReads = 1 + touched.size;
    let rcwReads = 0;
    for (let d = 0; d < chunks; d++) if (!covered.has(d)) rcwReads++;
    const directlyReadable = (member: number): boolean => this.members.readable(member, memberOffset, length);
    const rmwPossible = directlyReadable(parity) && [...touched.keys()].every((d) => directlyReadable(memberOf(d)));

    // Scratch taken here goes back once the member writes below settled; on an error it is dropped.
    const scratch: Buffer[] = [];
    const take = (): Buffer => {
      const buffer = this.scratch.take(length);
      scratch.push(buffer);
      return buffer;
    };
    const overlay = (dataIndex: number, image: Buffer): Buffer => {
      for (const span of touched.get(dataIndex) ?? []) dataOf(span).copy(image, span.offsetInChunk - lo);
      return image;
    };
    const newImages = new Map<number, Buffer>();
    // Chunks whose image around the spans was read, verified, from the member it is written back
    // to: only the spans' checksums change there (the CRCs of a whole merged range cost more than
    // its I/O saved otherwise).
    const readBack = new Set<number>();
    const imageOf = async (dataIndex: number): Promise<Buffer> => {
      const list = touched.get(dataIndex);
      // One span over the whole range: its bytes are the image, no copy.
      if (list?.length === 1 && covered.has(dataIndex)) return dataOf(list[0] as ChunkSpan);
      if (covered.has(dataIndex)) return overlay(dataIndex, take());
      if (list && directlyReadable(memberOf(dataIndex))) readBack.add(dataIndex);
      return overlay(dataIndex, await this.readMemberRange(stripe, memberOf(dataIndex), memberOffset, length, take()));
    };

    const newParity = take();
    if (rmwPossible && rmwReads < rcwReads) {
      // Read-modify-write: parity' = parity ^ old ^ new, for the touched chunks only.
      const oldParity = await this.readMemberRange(stripe, parity, memberOffset, length, take());
      oldParity.copy(newParity);
      for (const dataIndex of touched.keys()) {
        const old = await this.readMemberRange(stripe, memberOf(dataIndex), memberOffset, length, take());
        readBack.add(dataIndex);
        const image = take();
        old.copy(image);
        overlay(dataIndex, image);
        updateParity(newParity, old, image, newParity);
        newImages.set(dataIndex, image);
      }
    } else {
      // Reconstruct-write: parity = XOR of every chunk's new image (works degraded, too).
      const images: Buffer[] = [];
      for (let d = 0; d < chunks; d++) {
        const image = await imageOf(d);
        images.push(image);
        if (touched.has(d)) newImages.set(d, image);
      }
      computeParity(images, newParity);
    }

    const writes: Array<Promise<boolean>> = [];
    const changedOf = (dataIndex: number): Array<[number, number]> | undefined =>
      readBack.has(dataIndex) ? (touched.get(dataIndex) as ChunkSpan[]).map((span) => [span.offsetInChunk - lo, span.offsetInChunk - lo + span.lengthBytes]) : undefined;
    for (const [dataIndex, image] of newImages) writes.push(this.writeMember(memberOf(dataIndex), memberOffset, image, changedOf(dataIndex)));
    writes.push(this.writeMember(parity, memberOffset, newParity));
    await Promise.all(writes);
    for (const buffer of scratch) this.scratch.give(buffer);
    if (!this.members.intact) throw this.lost(`stripe ${stripe} could not be written with redundancy`);
  }

  // ---- durability and the bitmap ----

  /** Makes every completed write durable on all members, then clears bitmap bits gone quiet. */
  async sync(): Promise<void> {
    const startedMs = this.deps.now();
    const epochBefore = this.writeEpoch;
    await this.members.syncAll();
    if (!this.members.intact) throw this.lost('sync failed on too many members');
    const quietSince = (region: number): boolean => {
      const writers = this.regionWriters.get(region);
      return writers !== undefined && writers.inFlight === 0 && writers.lastWriteEpoch <= epochBefore;
    };
    // A region a resync has not finished keeps its bit whatever was written there since.
    const unresynced = this.behind?.regions;
    const quiet = [...this.regionWriters.keys()].filter(
      (region) => quietSince(region) && startedMs - (this.regionWriters.get(region) as RegionWriters).lastWriteMs >= BITMAP_CLEAR_DELAY_MS && !unresynced?.has(region),
    );
    if (quiet.length === 0) return;
    await this.members.clearRegions(quiet, (region) => {
      if (!quietSince(region)) return false;
      this.regionWriters.delete(region);
      return true;
    });
  }

  private beginRegionWrite(region: number): void {
    const writers = this.regionWriters.get(region) ?? { inFlight: 0, lastWriteMs: 0, lastWriteEpoch: 0 };
    writers.inFlight++;
    this.regionWriters.set(region, writers);
  }

  private endRegionWrite(region: number): void {
    const writers = this.regionWriters.get(region);
    if (!writers) return;
    writers.inFlight--;
    writers.lastWriteMs = this.deps.now();
    writers.lastWriteEpoch = ++this.writeEpoch;
  }

  /** Syncs, clears the whole bitmap, marks the array clean and closes the members. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // A resync still running ends after its stripe; what it did not reach stays dirty, and the
    // array unclean, so the next assembly resyncs it.
    const behind = this.behind;
    if (behind) behind.stopping = true;
    await this.resyncing;
    await this.members.syncAll();
    const unresynced = this.behind?.regions;
    const dirty = this.members.bitmap.dirtyRegions().filter((region) => !unresynced?.has(region));
    this.regionWriters.clear();
    // Clean only if the bits really are clear (their checksum pages written and synced first):
    // a clean array is assembled without a resync, and its tables are then taken as the truth.
    const cleared = await this.members.clearRegions(dirty).then(
      () => true,
      () => false,
    );
    this.members.clean = cleared && !unresynced;
    await this.members.writeSuperblocks().catch((error: Error) => this.deps.logger.error(`final superblock write failed: ${error.message}`));
    await Promise.all(this.members.slots.map((slot) => slot.device?.close()));
    await this.runCloseHooks();
  }

  /** Closes without marking clean: what a crash leaves (for tests and fencing). */
  async abandon(): Promise<void> {
    this.stopped = true;
    if (this.behind) this.behind.stopping = true;
    await Promise.all(this.members.slots.map((slot) => slot.device?.close()));
    await this.runCloseHooks();
  }

  /** `hook` runs once the member files are closed, whether the array stopped cleanly or was abandoned. */
  onClose(hook: () => Promise<void>): void {
    this.closeHooks.push(hook);
  }

  private async runCloseHooks(): Promise<void> {
    for (const hook of this.closeHooks.splice(0)) await hook().catch((error: Error) => this.deps.logger.warn(`after closing the array: ${error.message}`));
  }

  private checkRange(offset: number, lengthBytes: number): void {
    if (offset % BLOCK_BYTES !== 0 || lengthBytes % BLOCK_BYTES !== 0) {
      throw new RangeError(`raid I/O must be whole ${BLOCK_BYTES}-byte blocks (offset ${offset}, length ${lengthBytes})`);
    }
    if (offset < 0 || offset + lengthBytes > this.sizeBytes) throw new RangeError(`raid I/O ${offset}+${lengthBytes} is outside the array (${this.sizeBytes})`);
    if (this.stopped) throw new VolumeError('ESHUTDOWN', 'raid array is stopped');
  }

  private lost(message: string): VolumeError {
    return new VolumeError('EIO', message, { cause: new ArrayFailedError(message) });
  }
}

/** Used by scrub and tests: does a raid5 stripe range's parity equal the XOR of its data? */
export function parityMatches(data: readonly Buffer[], parity: Buffer): boolean {
  const check = Buffer.from(parity);
  for (const chunk of data) xorInto(check, chunk);
  return check.every((byte) => byte === 0);
}

