// The message response of one node (the patent's Fig. 10): applies what partners send to this
// node's structures. Space request, allocate / release memory, write page and page clean go to
// the mirror store; resync begin / end and the clean pages between them to the resync stage;
// forwarded I/O goes to the volume this node owns, or (NIL allocation) to the shared array if this
// node holds it open.
// A request that fails is answered with command complete and a status; the link stays up, because
// a failed disk read says nothing about the stream.
import type { MirrorStore, ResyncStage } from '../memory/index.js';
import type { SegmentPool } from '../core/index.js';
import type { Logger } from '../observe/index.js';
import { commandComplete, IoOp, MAX_IO_BYTES, MessageType, NIL_ALLOCATION, pagesTouched, Status, type CatalogMessage, type ForwardedIo, type Message, type OwnershipMessage } from '../partner/index.js';
import { BLOCK_BYTES, type StorageStack } from '../storage/index.js';
import { PINNED_READ_MIN_BYTES, type Volume } from '../volume/index.js';
import { OwnerUnavailableError } from './volume-switch.js';

/** A volume this node serves, as forwarded I/O sees it. */
export interface OwnedVolume {
  volume: Volume;
  /** Forwarded writes are refused, as the export itself refuses them (the forwarding node checks too). */
  readOnly: boolean;
}

/** Where in the array a volume lies: array writes from partners must land inside one. */
export interface ArrayExtent {
  arrayOffset: number;
  sizeBytes: number;
}

export interface ResponderTargets {
  mirror: MirrorStore;
  /** A warm handover's pages, until the takeover that installs them. */
  stage: ResyncStage;
  /** The shared array, if this node holds it open. */
  stack: StorageStack | null;
  /** Volumes this node owns, by allocation GUID (views that refuse once the volume moved on). */
  owned: Map<string, OwnedVolume>;
  /**
   * The volumes' places in the array. A partner writes the array (nil allocation) only to destage
   * volume pages; the node-state region and anything else of the array are the holder's alone.
   */
  extents: () => readonly ArrayExtent[];
  /** A partner's heartbeat carried its epoch (a newer one is adopted). */
  epoch: ((epoch: number) => void) | null;
  /** The ownership loop's messages (volume handover, holder announcement, mirror reclaim, owner notice); null until the node is built. */
  ownership: ((message: OwnershipMessage) => Promise<Message>) | null;
  /** The holder's catalog change and volume removal (volumes made, grown, deleted online); null until the node is built. */
  catalog: ((message: CatalogMessage) => Promise<Message>) | null;
  /** Set before the array is opened, so a probe during the (possibly long) assembly already says so. */
  holding: boolean;
  /** Structures built: array and volume requests are served. */
  ready: boolean;
}

export class Responder {
  private stopping = false;
  private volumeRequests = 0;
  private drained: Array<() => void> = [];

  constructor(
    private readonly targets: ResponderTargets,
    private readonly logger: Logger,
  ) {}

  handle = (message: Message, link?: ReplyingLink): Promise<Message | null> | Message | null => {
    switch (message.type) {
      case MessageType.WritePage:
        // A clean page belongs to a warm handover; a change makes staged copies of its allocation stale.
        if (!message.dirty) return link ? this.targets.stage.handle(message, link.peer.nodeId) : commandComplete(message, Status.Invalid);
        if (!this.targets.stage.empty) this.targets.stage.invalidate(message.allocation, message.virtualPage, pagesTouched(message));
        return this.targets.mirror.handle(message, link?.peer.nodeId);
      case MessageType.ResyncBegin:
      case MessageType.ResyncEnd:
        return link ? this.targets.stage.handle(message, link.peer.nodeId) : commandComplete(message, Status.Invalid);
      case MessageType.SpaceRequest:
      case MessageType.AllocateMemory:
      case MessageType.ReleaseMemory:
      case MessageType.PageClean:
        return this.targets.mirror.handle(message, link?.peer.nodeId);
      case MessageType.ForwardedIo:
        return this.residentRead(message, link?.payloads ?? null) ?? this.forwarded(message, link?.payloads ?? null);
      case MessageType.Heartbeat:
        this.targets.epoch?.(message.epoch);
        return null;
      case MessageType.VolumeHandover:
      case MessageType.HolderAnnouncement:
      case MessageType.MirrorReclaim:
      case MessageType.OwnerNotice:
        return this.targets.ownership ? this.targets.ownership(message) : commandComplete(message, Status.NotPartner);
      case MessageType.CatalogChange:
      case MessageType.VolumeRemoval:
        return this.targets.catalog ? this.targets.catalog(message) : commandComplete(message, Status.NotPartner);
      default:
        return commandComplete(message, Status.Invalid);
    }
  };

  /**
   * Stops serving forwarded volume I/O (answered shutting down from now on) and resolves once the
   * requests already running are done, so a stopping owner destages their writes too. Array
   * requests go on: partners still destage through this node until its links close.
   */
  async stopVolumeRequests(): Promise<void> {
    this.stopping = true;
    while (this.volumeRequests > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  /**
   * A short forwarded read of pages all resident and not being written, answered in this step;
   * null for anything else, which forwarded() then answers (errors included). Half the owner's
   * time for a 4 KiB forwarded read was the chain of async calls down to that same copy.
   */
  private residentRead(io: ForwardedIo, replies: SegmentPool | null): Message | null {
    if (io.op !== IoOp.Read || io.length === 0 || io.length >= PINNED_READ_MIN_BYTES || !this.targets.ready || this.stopping) return null;
    const volume = this.targets.owned.get(io.allocation)?.volume;
    if (volume?.readResident === undefined || io.offset + io.length > volume.sizeBytes) return null;
    const data = replies !== null ? replies.take(io.length) : Buffer.allocUnsafe(io.length);
    if (volume.readResident(io.offset, data)) return { type: MessageType.IoData, requestId: io.requestId, data };
    // Copied from synchronously, so nothing else holds it.
    replies?.give(data);
    return null;
  }

  private async forwarded(io: ForwardedIo, replies: SegmentPool | null): Promise<Message> {
    if (io.op === IoOp.Probe) return commandComplete(io, this.targets.holding ? Status.Ok : Status.NotResident);
    if (!this.targets.ready) return commandComplete(io, Status.NotPartner);
    if (io.allocation === NIL_ALLOCATION) return this.guard(io, () => this.onArray(io, replies));
    if (this.stopping) return commandComplete(io, Status.ShuttingDown);
    const owned = this.targets.owned.get(io.allocation);
    if (!owned) return commandComplete(io, Status.UnknownAllocation);
    if (owned.readOnly && WRITING_OPS.has(io.op)) {
      this.logger.warn(`forwarded ${opName(io.op)} to read-only volume refused`);
      return commandComplete(io, Status.Invalid);
    }
    const volume = owned.volume;
    this.volumeRequests++;
    try {
      return await this.guard(io, () => onVolume(io, volume, replies));
    } finally {
      this.volumeRequests--;
      if (this.volumeRequests === 0) for (const resume of this.drained.splice(0)) resume();
    }
  }

  private async guard(io: ForwardedIo, work: () => Promise<Message>): Promise<Message> {
    try {
      return await work();
    } catch (error) {
      // The volume moved on while the request waited: the sender retries with its new owner.
      if (error instanceof OwnerUnavailableError) return commandComplete(io, Status.UnknownAllocation);
      this.logger.warn(`forwarded ${opName(io.op)} at ${io.offset} (+${io.length}) failed: ${(error as Error).message}`);
      return commandComplete(io, Status.IoError);
    }
  }

  private async onArray(io: ForwardedIo, replies: SegmentPool | null): Promise<Message> {
    const stack = this.targets.stack;
    if (!stack) return commandComplete(io, Status.NotResident);
    if (io.op === IoOp.Flush) {
      await stack.flush();
      return commandComplete(io, Status.Ok);
    }
    const aligned = io.offset % BLOCK_BYTES === 0 && io.length % BLOCK_BYTES === 0 && io.offset + io.length <= stack.sizeBytes;
    if (!aligned) return commandComplete(io, Status.Invalid);
    if (io.op === IoOp.Read) return readReply(io, replies, (data) => stack.readBlocks(io.offset, data));
    if (io.op === IoOp.Write) {
      if (!this.targets.extents().some((extent) => io.offset >= extent.arrayOffset && io.offset + io.length <= extent.arrayOffset + extent.sizeBytes)) {
        this.logger.warn(`forwarded array write at ${io.offset} (+${io.length}) lies outside every volume: refused`);
        return commandComplete(io, Status.Invalid);
      }
      // A copy: the payload is a view of the link's receive buffer, and the destager keeps what it gets.
      stack.enqueueBlocks(io.offset, Buffer.isBuffer(io.data) ? Buffer.from(io.data) : Buffer.concat(io.data));
      return commandComplete(io, Status.Ok);
    }
    return commandComplete(io, Status.Invalid);
  }
}

/** The link a request came on, as far as the responder needs it. */
export interface ReplyingLink {
  peer: { nodeId: number };
  /** Where read replies take their data from; the link gives a segment back once its reply is written. */
  payloads?: SegmentPool;
}

/**
 * Io data read by `fill` into a segment of the link's pool (no 1 MiB allocation per forwarded read).
 * If `fill` fails, page reads it started may still be writing the segment: it is left to the collector.
 */
async function readReply(io: ForwardedIo, replies: SegmentPool | null, fill: (data: Buffer) => Promise<void>): Promise<Message> {
  const data = replies !== null && io.length > 0 ? replies.take(io.length) : Buffer.allocUnsafe(io.length);
  try {
    await fill(data);
  } catch (error) {
    replies?.forget(data);
    throw error;
  }
  return { type: MessageType.IoData, requestId: io.requestId, data };
}

async function onVolume(io: ForwardedIo, volume: Volume, replies: SegmentPool | null): Promise<Message> {
  const inRange = io.offset + io.length <= volume.sizeBytes;
  if (!inRange) return commandComplete(io, Status.Invalid);
  switch (io.op) {
    case IoOp.Read: {
      if (io.length > MAX_IO_BYTES) return commandComplete(io, Status.Invalid);
      // Resident pages go on the link as they are, read-locked until it wrote them (PartnerLink.settle).
      const lent = io.length >= PINNED_READ_MIN_BYTES ? (volume.pinRead?.(io.offset, io.length) ?? null) : null;
      if (lent !== null) return { type: MessageType.IoData, requestId: io.requestId, data: NO_DATA, lent };
      return readReply(io, replies, (data) => volume.read(io.offset, data));
    }
    case IoOp.Write:
      await volume.write(io.offset, Buffer.isBuffer(io.data) ? [io.data] : io.data, io.fua);
      break;
    case IoOp.Flush:
      await volume.flush();
      break;
    case IoOp.Trim:
      await volume.trim(io.offset, io.length, io.fua);
      break;
    case IoOp.Zero:
      await volume.zero(io.offset, io.length, { fua: io.fua, noHole: true, fastZero: false });
      break;
    default:
      return commandComplete(io, Status.Invalid);
  }
  return commandComplete(io, Status.Ok);
}


const WRITING_OPS = new Set<IoOp>([IoOp.Write, IoOp.Zero, IoOp.Trim]);
/** The data field of an io data reply whose bytes are lent pages. */
const NO_DATA = Buffer.alloc(0);

function opName(op: IoOp): string {
  return ['probe', 'read', 'write', 'flush', 'zero', 'trim'][op] ?? `op ${op}`;
}
