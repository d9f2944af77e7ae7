// Replication to partners over partner links: write page to every live link, wait for each one's
// command complete. A partner that fails to apply (no space, link lost) makes the write fall back to
// write-through, so nothing is acknowledged that lives in one node's memory only.
import { LinkClosedError, MessageType, Status, type PartnerLink } from '../partner/index.js';
import type { Logger } from '../observe/index.js';
import type { AllocationSpec, PageWrite, Replicator } from './memory-manager.js';

export class LinkReplicator implements Replicator {
  private readonly links = new Set<PartnerLink>();
  private readonly allocations = new Map<string, AllocationSpec>();

  /** `ownerNodeId` is this node's id: the lock master of the allocations it announces. */
  constructor(
    private readonly ownerNodeId = 0,
    private readonly logger: Logger | null = null,
  ) {}

  /** A partner joins: it learns every allocation first; the link keeps order, so that precedes any page. */
  add(link: PartnerLink): void {
    this.links.add(link);
    for (const spec of this.allocations.values()) this.announce(link, spec);
  }

  allocateMemory(spec: AllocationSpec): void {
    this.allocations.set(spec.guid, spec);
    for (const link of this.links) if (link.isOpen) this.announce(link, spec);
  }

  releaseMemory(guid: string): void {
    this.allocations.delete(guid);
    for (const link of this.links) {
      if (!link.isOpen) continue;
      link.request({ type: MessageType.ReleaseMemory, allocation: guid }).catch(() => undefined);
    }
  }

  /**
   * Fig. 5 on every live partner again, answered: resolves once each accepted the allocation as it
   * is now, rejects naming the first that refused. A volume made or grown online is exported only
   * after this, so no partner refuses its first write page.
   */
  async confirmAllocation(guid: string): Promise<void> {
    const spec = this.allocations.get(guid);
    if (!spec) throw new Error(`allocation ${guid} was never announced`);
    await Promise.all(
      [...this.links].filter((link) => link.isOpen).map(async (link) => {
        const reply = await link.request({ type: MessageType.AllocateMemory, allocation: spec.guid, sizeBytes: spec.sizeBytes, pageBytes: spec.pageBytes, ownerNodeId: this.ownerNodeId });
        if (reply.type !== MessageType.CommandComplete || reply.status !== Status.Ok) {
          throw new Error(`partner ${link.peer.nodeId} refused allocation ${guid} of ${spec.sizeBytes} bytes (status ${reply.type === MessageType.CommandComplete ? reply.status : reply.type})`);
        }
      }),
    );
  }

  /**
   * Fig. 5 on one partner: space request, then allocate memory. Room is not reserved (pages are
   * mirrored on demand); a partner short of room is reported, and its write pages are later
   * refused with no space, which makes those writes go write-through.
   */
  private announce(link: PartnerLink, spec: AllocationSpec): void {
    const space = link.request({ type: MessageType.SpaceRequest, bytesWanted: spec.pageBytes });
    const created = link.request({ type: MessageType.AllocateMemory, allocation: spec.guid, sizeBytes: spec.sizeBytes, pageBytes: spec.pageBytes, ownerNodeId: this.ownerNodeId });
    Promise.all([space, created]).then(
      ([status, reply]) => {
        if (status.type === MessageType.SpaceStatus && status.freeBytes + status.reclaimableBytes < spec.pageBytes) {
          this.logger?.warn(`partner ${link.peer.nodeId} has no room for a page of allocation ${spec.guid}: its writes go write-through until it has`);
        }
        if (reply.type !== MessageType.CommandComplete || reply.status !== Status.Ok) {
          this.logger?.error(`partner ${link.peer.nodeId} refused allocation ${spec.guid} (status ${reply.type === MessageType.CommandComplete ? reply.status : reply.type}): its writes go write-through`);
        }
      },
      () => undefined,
    );
  }

  livePartners(): number {
    let live = 0;
    for (const link of this.links) {
      if (link.isOpen) live++;
      else this.links.delete(link);
    }
    return live;
  }

  /** A run of pages: one write page per partner, the frames' bytes sent by reference. */
  writePage(write: PageWrite): Promise<boolean> {
    return this.toEveryPartner(write.allocation, write.virtualPage, write.version, write.pageBytes, write.offset, write.length, write.data);
  }

  private async toEveryPartner(allocation: string, virtualPage: number, version: number, pageBytes: number, offset: number, length: number, data: Buffer | readonly Buffer[]): Promise<boolean> {
    const message = { type: MessageType.WritePage, allocation, virtualPage, version, pageBytes, offset, length, dirty: true, zeroFill: false, data } as const;
    const results = await Promise.all(
      [...this.links].filter((link) => link.isOpen).map(async (link) => {
        try {
          const reply = await link.request(message);
          return reply.type === MessageType.CommandComplete && reply.status === Status.Ok;
        } catch (error) {
          if (error instanceof LinkClosedError) return false;
          throw error;
        }
      }),
    );
    return results.length > 0 && results.every(Boolean);
  }

  async barrier(): Promise<void> {
    // A space request is answered in order after everything sent before it; a link that fails
    // meanwhile is a lost partner, which the caller's lease rule covers.
    await Promise.all([...this.links].filter((link) => link.isOpen).map((link) => link.request({ type: MessageType.SpaceRequest, bytesWanted: 0 }).catch(() => null)));
  }

  pageClean(allocation: string, virtualPage: number, version: number, pageCount = 1): void {
    for (const link of this.links) if (link.isOpen) link.send({ type: MessageType.PageClean, allocation, virtualPage, version, pageCount });
  }
}
