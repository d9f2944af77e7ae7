// Replication to partners over partner links: write page to every live link, wait for each one's
// command complete. A partner that fails to apply (no space, link lost) makes the write fall back to
// write-through, so nothing is acknowledged that lives in one node's memory only.
import { LinkClosedError, MessageType, Status, type PartnerLink } from '../partner/index.js';
import type { PageWrite, Replicator } from './memory-manager.js';

export class LinkReplicator implements Replicator {
  private readonly links = new Set<PartnerLink>();

  add(link: PartnerLink): void {
    this.links.add(link);
  }

  livePartners(): number {
    let live = 0;
    for (const link of this.links) {
      if (link.isOpen) live++;
      else this.links.delete(link);
    }
    return live;
  }

  async writePage(write: PageWrite): Promise<boolean> {
    const results = await Promise.all(
      [...this.links].filter((link) => link.isOpen).map(async (link) => {
        try {
          const reply = await link.request({
            type: MessageType.WritePage,
            allocation: write.allocation,
            virtualPage: write.virtualPage,
            version: write.version,
            pageBytes: write.pageBytes,
            offset: write.offset,
            length: write.data.length,
            dirty: true,
            zeroFill: false,
            data: write.data,
          });
          return reply.type === MessageType.CommandComplete && reply.status === Status.Ok;
        } catch (error) {
          if (error instanceof LinkClosedError) return false;
          throw error;
        }
      }),
    );
    return results.length > 0 && results.every(Boolean);
  }

  pageClean(allocation: string, virtualPage: number, version: number): void {
    for (const link of this.links) if (link.isOpen) link.send({ type: MessageType.PageClean, allocation, virtualPage, version });
  }
}
