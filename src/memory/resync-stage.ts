// The receiving side of a warm handover (failback): a node about to be handed a volume
// gets the giver's clean resident pages first, bracketed by resync begin / resync end, and keeps
// them here, in frames of its pool, until the takeover message makes it the owner. Then they become
// its memory manager's resident pages (installCleanFrame) and its first reads take no page-in.
//
// A staged page is a copy of what the disks hold at the moment the giver, paused and flushed, sent
// it. It may be installed only while that is still true, so everything that could have changed
// the disks since throws it away:
//   a write page (mirrored change) of a page, from any node             the page was written again
//   the giver's link closing                                            its later writes reach no one here
//   a takeover message giving the allocation to another node
//   a takeover at another epoch than the resync's                      a takeover claim happened between
//   STAGE_TTL_MS without resync end, or then without a takeover          the frames are wanted back
// Staging takes free frames only (never this node's pages): a page with none is skipped, and the
// giver stops sending.
import { commandComplete, MessageType, Status, type Message, type ResyncBegin, type ResyncEnd, type WritePage } from '../partner/index.js';
import { systemClock, type Clock } from '../core/index.js';
import type { FramePool } from './frame-pool.js';

/** How long staged pages wait for the takeover that installs them. */
export const STAGE_TTL_MS = 30_000;

interface Session {
  epoch: number;
  /** allocation → page → frame. */
  pages: Map<string, Map<number, number>>;
  /** Pages the giver sent, staged or not (no frame); resync end must agree. */
  sent: number;
  complete: boolean;
  cancelTimer: () => void;
}

export class ResyncStage {
  /** By giver. */
  private readonly sessions = new Map<number, Session>();

  constructor(
    private readonly pool: FramePool,
    /** The allocation's shape as its owner announced it (allocate memory), or undefined. */
    private readonly shapeOf: (guid: string) => { sizeBytes: number; pageBytes: number } | undefined,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Resync begin, a clean write page, resync end, from the partner `from`. */
  handle(message: ResyncBegin | ResyncEnd | WritePage, from: number): Message {
    switch (message.type) {
      case MessageType.ResyncBegin:
        this.discardSession(from);
        this.sessions.set(from, { epoch: message.epoch, pages: new Map(), sent: 0, complete: false, cancelTimer: this.expire(from) });
        return commandComplete(message, Status.Ok);
      case MessageType.WritePage:
        return commandComplete(message, this.stagePages(message, from));
      case MessageType.ResyncEnd: {
        const session = this.sessions.get(from);
        if (!session || session.complete || session.epoch !== message.epoch || session.sent !== message.pageCount) {
          this.discardSession(from);
          return commandComplete(message, Status.Invalid);
        }
        session.complete = true;
        session.cancelTimer();
        session.cancelTimer = this.expire(from);
        return commandComplete(message, Status.Ok);
      }
    }
  }

  /** Nothing staged and no resync running (the responder's test before every mirrored write). */
  get empty(): boolean {
    return this.sessions.size === 0;
  }

  /** Pages staged now, over every giver. */
  get stagedPages(): number {
    let count = 0;
    for (const session of this.sessions.values()) for (const pages of session.pages.values()) count += pages.size;
    return count;
  }

  /**
   * Hands the allocation's staged pages from a complete resync at `epoch` to `install` (true: it
   * keeps the frame); the rest, and anything staged of it at another epoch, is freed. The count installed.
   */
  take(guid: string, epoch: number, install: (virtualPage: number, frame: number) => boolean): number {
    let installed = 0;
    for (const session of this.sessions.values()) {
      const pages = session.pages.get(guid);
      if (!pages) continue;
      session.pages.delete(guid);
      const current = session.complete && session.epoch === epoch;
      for (const [virtualPage, frame] of pages) {
        if (current && install(virtualPage, frame)) installed++;
        else this.pool.free(frame);
      }
    }
    return installed;
  }

  /**
   * The allocation may have changed on the disks: pages `firstPage` … `firstPage + pageCount - 1`
   * were written again (a mirrored write page), or, without a range, all of it (it was given to
   * another node).
   */
  invalidate(guid: string, firstPage = 0, pageCount = Infinity): void {
    for (const session of this.sessions.values()) {
      const pages = session.pages.get(guid);
      if (!pages) continue;
      if (pageCount === Infinity) this.freeAll(pages);
      for (let virtualPage = firstPage; virtualPage < firstPage + pageCount && pages.size > 0; virtualPage++) {
        const frame = pages.get(virtualPage);
        if (frame === undefined) continue;
        this.pool.free(frame);
        pages.delete(virtualPage);
      }
      if (pages.size === 0) session.pages.delete(guid);
    }
  }

  /** The giver's link closed. */
  peerLost(peer: number): void {
    this.discardSession(peer);
  }

  private stagePages(write: WritePage, from: number): Status {
    const session = this.sessions.get(from);
    if (!session || session.complete) return Status.Invalid;
    const shape = this.shapeOf(write.allocation);
    if (!shape) return Status.UnknownAllocation;
    const { pageBytes } = shape;
    const count = write.length / pageBytes;
    const whole = write.pageBytes === pageBytes && write.offset === 0 && Number.isInteger(count) && count > 0 && !write.zeroFill;
    if (!whole || write.virtualPage + count > shape.sizeBytes / pageBytes) return Status.Invalid;
    const data = write.data as Buffer;
    session.sent += count;
    let pages = session.pages.get(write.allocation);
    if (!pages) {
      pages = new Map();
      session.pages.set(write.allocation, pages);
    }
    for (let index = 0; index < count; index++) {
      const virtualPage = write.virtualPage + index;
      const frame = this.pool.allocate(pageBytes);
      if (frame === null) return Status.NoSpace;
      // A copy: the decoded data is a view of the link's receive buffer.
      data.copy(this.pool.view(frame), 0, index * pageBytes, (index + 1) * pageBytes);
      const previous = pages.get(virtualPage);
      if (previous !== undefined) this.pool.free(previous);
      pages.set(virtualPage, frame);
    }
    return Status.Ok;
  }

  private expire(peer: number): () => void {
    return this.clock.setTimer(STAGE_TTL_MS, () => this.discardSession(peer));
  }

  private discardSession(peer: number): void {
    const session = this.sessions.get(peer);
    if (!session) return;
    this.sessions.delete(peer);
    session.cancelTimer();
    for (const pages of session.pages.values()) this.freeAll(pages);
  }

  private freeAll(pages: Map<number, number>): void {
    for (const frame of pages.values()) this.pool.free(frame);
    pages.clear();
  }
}
