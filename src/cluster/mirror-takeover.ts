// What a node does with the pages it mirrors for a partner when that partner's volumes change hands.
//
//   the holder takes a dead owner's volume     its mirrored pages, the newest of what that owner
//     (serveFromMirrors)                       acknowledged, to the disks and synced, then served
//                                              here with them resident (clean: the disks have them),
//                                              so the first reads of what it wrote last need no page-in
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

export class MirrorTakeover {
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

  /** On the holder: to the storage stack (the caller flushes); elsewhere dropped. The count. */
  destageMirrors(allocations: readonly Allocation[]): number {
    return this.takeMirrors(allocations, this.dropAtTakeover ? null : this.stack()).length;
  }

  /** From any node: through the holder if it is another, and synced. The count. */
  async destageMirrorsToArray(allocations: readonly Allocation[]): Promise<number> {
    const pages = this.takeMirrors(allocations, this.access).length;
    if (pages > 0) await this.access.flush();
    return pages;
  }

  /**
   * Takeover on the holder: the allocation's mirrored pages to the disks and synced, then `own`
   * serves it here, and (only into an allocation that starts here now, only once the disks have
   * them, only into free frames) they are installed as its resident pages. The count.
   */
  async serveFromMirrors(allocation: Allocation, fresh: boolean, own: () => void): Promise<number> {
    const stack = this.stack();
    const pages = this.takeMirrors([allocation], this.dropAtTakeover ? null : stack);
    await stack?.flush();
    own();
    if (fresh && stack && !this.dropAtTakeover) for (const page of pages) this.manager.installCleanPage(allocation.guid, page.virtualPage, page.data);
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

  private takeMirrors(allocations: readonly Allocation[], sink: BlockSink | null): Array<{ virtualPage: number; data: Buffer }> {
    const taken: Array<{ virtualPage: number; data: Buffer }> = [];
    for (const allocation of allocations) {
      for (const page of this.mirror.takeAllocation(allocation.guid)) {
        sink?.enqueueBlocks(allocation.arrayOffset + page.virtualPage * page.data.length, page.data);
        taken.push(page);
      }
    }
    return taken;
  }
}
