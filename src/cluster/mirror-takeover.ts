// What a node does with the pages it mirrors for a partner when that partner's volumes change hands.
//
//   the holder takes a dead owner's volume     its mirrored pages, the newest of what that owner
//     (serveFromMirrors)                       acknowledged, to the storage stack, served here at once
//                                              with them resident (clean: the stack holds them until
//                                              the disks do), then synced before the move is announced
//   the array changes hands, a volume moves    mirrored pages to the disks (on the holder), or
//     (destageMirrors)                         dropped (elsewhere: older than what the disks get)
//   a restarted node is about to serve         mirrored pages to the disks through the holder,
//     (destageMirrorsToArray, reclaim)         synced: the only copy of what its previous process
//                                              acknowledged last
import type { MemoryManager, MirrorStore } from '../memory/index.js';
import type { Allocation } from '../storage/index.js';

/** Where mirrored pages can go: the storage stack, or the array through whichever node holds it. */
export interface BlockSink {
  enqueueBlocks(offset: number, data: Buffer): void;
  flush(): Promise<void>;
}

/**
 * Pages installed resident at a volume takeover, at most (the newest first): each is a copy into a
 * frame before the volume serves anything, and the stack answers the rest from its dirty blocks.
 */
const INSTALL_MAX_BYTES = 32 * 1024 * 1024;

interface TakenPage {
  virtualPage: number;
  version: number;
  data: Buffer;
  frame: number;
}

export class MirrorTakeover {
  /** Frames lent to a sink whose flush failed: given back after the next flush of that sink that succeeds. */
  private readonly unreturned = new Map<BlockSink, number[]>();

  constructor(
    private readonly mirror: MirrorStore,
    private readonly manager: MemoryManager,
    /** The storage stack when this node holds the array, else null. */
    private readonly stack: () => BlockSink | null,
    /** The array whichever node holds it (through the holder when another does). */
    private readonly access: BlockSink,
    /** A bug planted by test/sim (NodeEnvironment.faults): mirrored pages dropped at a takeover. */
    private readonly dropAtTakeover = false,
  ) {}

  /**
   * On the holder: to the storage stack, and flushed (the frames come back once it succeeds);
   * elsewhere dropped. The count, and when the pages are on the disks (a caller may ignore it:
   * a failure also reaches the next flush, and the frames stay lent until one succeeds).
   */
  destageMirrors(allocations: readonly Allocation[]): { pages: number; onDisks: Promise<void> } {
    const stack = this.dropAtTakeover ? null : this.stack();
    const pages = this.takeMirrors(allocations, stack);
    const onDisks = stack && pages.length > 0 ? this.flushAndReturn(stack, pages) : Promise.resolve();
    onDisks.catch(() => undefined);
    return { pages: pages.length, onDisks };
  }

  /** From any node: through the holder if it is another, and synced. The count. */
  async destageMirrorsToArray(allocations: readonly Allocation[]): Promise<number> {
    const pages = this.takeMirrors(allocations, this.access);
    if (pages.length > 0) await this.flushAndReturn(this.access, pages);
    return pages.length;
  }

  /**
   * Takeover on the holder: the allocation's mirrored pages to the storage stack, `own` serves it
   * here at once, and (only into an allocation that starts here now, only into free frames, the
   * newest first and INSTALL_MAX_BYTES at most) they are installed as its resident pages; then it
   * waits until the disks have them and everything else enqueued (the array takeover's mirrored
   * pages too), before the caller records and announces the move (a partner told of it drops its own
   * copies). Serving does not wait: until the disks have the pages, the stack answers reads of them
   * from its dirty blocks, a resident page evicted meanwhile reads them back from there, and a write
   * goes through on its own blocks (Destager.flushBlocks). If the disks refuse them, `disown`
   * forwards the volume back (the next pass takes it over again). The count.
   */
  async serveFromMirrors(allocation: Allocation, fresh: boolean, own: () => void, disown: () => void): Promise<number> {
    const stack = this.dropAtTakeover ? null : this.stack();
    const pages = this.takeMirrors([allocation], stack);
    own();
    if (!stack) return pages.length;
    if (fresh) this.installResident(allocation, pages);
    try {
      await this.flushAndReturn(stack, pages);
    } catch (error) {
      disown();
      throw error;
    }
    return pages.length;
  }

  /** Partners' pages this node mirrors and the disks may not have yet (diagnostics; the crash test reads it). */
  mirrorPages(nameOf: (guid: string) => string): Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> {
    const out: Array<{ volume: string; virtualPage: number; version: number; data: Buffer }> = [];
    for (const guid of this.mirror.allocations()) {
      for (const [virtualPage, page] of this.mirror.pagesOf(guid)) out.push({ volume: nameOf(guid), virtualPage, version: page.version, data: page.data });
    }
    return out;
  }

  private installResident(allocation: Allocation, pages: readonly TakenPage[]): void {
    const newest = [...pages].sort((a, b) => b.version - a.version).slice(0, Math.floor(INSTALL_MAX_BYTES / allocation.pageBytes));
    for (const page of newest) this.manager.installCleanPage(allocation.guid, page.virtualPage, page.data);
  }

  /**
   * Takes the allocations' mirrored pages out of the mirror store into `sink` (their frames lent to
   * it, not copied); with no sink they are dropped and their frames given back at once.
   */
  private takeMirrors(allocations: readonly Allocation[], sink: BlockSink | null): TakenPage[] {
    const taken: TakenPage[] = [];
    for (const allocation of allocations) {
      for (const page of this.mirror.takeAllocation(allocation.guid)) {
        sink?.enqueueBlocks(allocation.arrayOffset + page.virtualPage * page.data.length, page.data);
        taken.push(page);
      }
    }
    if (!sink) this.giveBack(taken.map((page) => page.frame));
    return taken;
  }

  /**
   * Flushes `sink`, then gives the lent frames back: nothing below reads them once a flush that
   * covers them succeeded (it waits for writes of blocks replaced meanwhile too). After a failure
   * they stay lent (the stack keeps the blocks dirty for a retry) until a later flush succeeds.
   */
  private async flushAndReturn(sink: BlockSink, pages: readonly TakenPage[]): Promise<void> {
    const owed = [...(this.unreturned.get(sink) ?? []), ...pages.map((page) => page.frame)];
    this.unreturned.delete(sink);
    try {
      await sink.flush();
    } catch (error) {
      this.unreturned.set(sink, [...(this.unreturned.get(sink) ?? []), ...owed]);
      throw error;
    }
    this.giveBack(owed);
  }

  private giveBack(frames: readonly number[]): void {
    if (frames.length === 0) return;
    this.mirror.returnFrames(frames);
    this.manager.framesReturned();
  }
}
