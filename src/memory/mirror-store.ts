// The partner side of mirroring (Fig. 10's responder for write page and page clean): complete
// images of a peer's pages that are not on the disks yet, in frames of this node's pool. What a
// takeover needs: every acknowledged write is either on the disks or in here.
import { MessageType, Status, type Message } from '../partner/index.js';
import type { FramePool } from './frame-pool.js';

interface MirrorPage {
  frame: number;
  data: Buffer;
  version: number;
}

export class MirrorStore {
  private readonly pages = new Map<string, Map<number, MirrorPage>>();

  /**
   * `reclaim` frees a frame of this node's own clean pages when the pool is full, so a partner's
   * write is not refused while memory holds pages that the disks could give back.
   */
  constructor(
    private readonly pool: FramePool,
    private readonly reclaim: (bytes: number) => number | null = () => null,
  ) {}

  /** Applies write page and page clean; answers write page with command complete. */
  handle(message: Message): Message | null {
    if (message.type === MessageType.WritePage) {
      const status = this.writePage(message.allocation, message.virtualPage, message.version, message.pageBytes, message.offset, message.zeroFill ? null : message.data, message.length);
      return { type: MessageType.CommandComplete, requestId: message.requestId, requestType: MessageType.WritePage, status };
    }
    if (message.type === MessageType.PageClean) this.pageClean(message.allocation, message.virtualPage, message.version);
    return null;
  }

  /** The mirrored pages of an allocation: page → {version, data}; data are views of the pool. */
  pagesOf(allocation: string): Map<number, { version: number; data: Buffer }> {
    return new Map([...(this.pages.get(allocation) ?? new Map<number, MirrorPage>())].map(([page, mirror]) => [page, { version: mirror.version, data: mirror.data }]));
  }

  get mirroredPages(): number {
    let count = 0;
    for (const pages of this.pages.values()) count += pages.size;
    return count;
  }

  /** Removes an allocation's mirrored pages and returns copies of them, for destaging after its owner is gone. */
  takeAllocation(allocation: string): Array<{ virtualPage: number; version: number; data: Buffer }> {
    const pages = this.pages.get(allocation);
    if (!pages) return [];
    this.pages.delete(allocation);
    return [...pages].map(([virtualPage, mirror]) => {
      const data = Buffer.from(mirror.data);
      this.pool.free(mirror.frame);
      return { virtualPage, version: mirror.version, data };
    });
  }

  /** Allocations that have mirrored pages here. */
  allocations(): string[] {
    return [...this.pages.keys()];
  }

  private writePage(allocation: string, virtualPage: number, version: number, pageBytes: number, offset: number, data: Buffer | null, length: number): Status {
    let pages = this.pages.get(allocation);
    if (!pages) {
      pages = new Map();
      this.pages.set(allocation, pages);
    }
    let mirror = pages.get(virtualPage);
    const whole = offset === 0 && length === pageBytes;
    if (!mirror) {
      // A range of a page we do not hold cannot make a complete image: the owner resends it whole.
      if (!whole) return Status.NotResident;
      const frame = this.pool.allocate(pageBytes) ?? this.reclaim(pageBytes);
      if (frame === null) return Status.NoSpace;
      mirror = { frame, data: this.pool.view(frame), version: 0 };
      pages.set(virtualPage, mirror);
    }
    if (offset + length > mirror.data.length) return Status.Invalid;
    if (data) data.copy(mirror.data, offset, 0, length);
    else mirror.data.fill(0, offset, offset + length);
    mirror.version = Math.max(mirror.version, version);
    return Status.Ok;
  }

  private pageClean(allocation: string, virtualPage: number, version: number): void {
    const pages = this.pages.get(allocation);
    const mirror = pages?.get(virtualPage);
    // A newer version arrived after the one on the disks: the mirror still holds undestaged bytes.
    if (!pages || !mirror || mirror.version > version) return;
    pages.delete(virtualPage);
    this.pool.free(mirror.frame);
  }
}
