// The shared array as seen by a node that does not hold it open: page-in and destage travel as
// forwarded I/O (NIL allocation = array offsets) to the node that does. At most one process has
// the member files open, so superblocks, the write-intent bitmap and the checksum pages keep a
// single writer (docs/architecture.md, "one array holder").
import { ClusterError } from '../core/index.js';
import { IoOp, MessageType, NIL_ALLOCATION, Status, type Message, type PartnerLink } from '../partner/index.js';
import type { BlockStore } from '../storage/index.js';

export class RemoteArrayError extends ClusterError {
  override name = 'RemoteArrayError';
}

/** No holder answers now (link gone, holder stopping or not the holder any more): retry after a takeover. */
export class HolderUnavailableError extends RemoteArrayError {
  override name = 'HolderUnavailableError';
}

/** Answers that say "not here, not now" rather than "failed": the request may succeed elsewhere or later. */
export function isUnavailable(reply: Message): boolean {
  return reply.type === MessageType.CommandComplete && (reply.status === Status.ShuttingDown || reply.status === Status.NotPartner || reply.status === Status.NotResident || reply.status === Status.UnknownAllocation);
}

export class RemoteArray implements BlockStore {
  /**
   * Destage writes not yet covered by a flush, each resolving to its failure or null. A flush
   * takes the ones sent before it and reports any of them that failed; a write stays here until a
   * flush has seen it, so a failure is never consumed by one flush and missed by another.
   */
  private readonly unflushed = new Set<Promise<Error | null>>();

  constructor(private readonly holder: () => PartnerLink | null) {}

  async readBlocks(offset: number, into: Buffer): Promise<void> {
    const { reply, link } = await this.requestOn(IoOp.Read, offset, into.length, EMPTY);
    if (reply.type !== MessageType.IoData || reply.data.length !== into.length) throw new RemoteArrayError(`array read at ${offset}: the holder answered ${describe(reply)}`);
    reply.data.copy(into);
    link.release(reply);
  }

  enqueueBlocks(offset: number, data: Buffer): void {
    this.unflushed.add(
      this.request(IoOp.Write, offset, data.length, data).then(
        (reply) => (isOk(reply) ? null : new RemoteArrayError(`array write at ${offset}: the holder answered ${describe(reply)}`)),
        (error: Error) => error,
      ),
    );
  }

  /** Everything enqueued before the call is on the array and synced, by the holder's flush. */
  async flush(): Promise<void> {
    const covered = [...this.unflushed];
    const failures = await Promise.all(covered);
    for (const write of covered) this.unflushed.delete(write);
    const failure = failures.find((result) => result !== null);
    if (failure) throw failure;
    const reply = await this.request(IoOp.Flush, 0, 0, EMPTY);
    if (!isOk(reply)) throw new RemoteArrayError(`array flush: the holder answered ${describe(reply)}`);
  }

  private async request(op: IoOp, offset: number, length: number, data: Buffer): Promise<Message> {
    return (await this.requestOn(op, offset, length, data)).reply;
  }

  /** The reply with the link it came on, which takes back the reply's data once it was copied out. */
  private async requestOn(op: IoOp, offset: number, length: number, data: Buffer): Promise<{ reply: Message; link: PartnerLink }> {
    const link = this.holder();
    if (!link) throw new HolderUnavailableError('no link to the node that holds the shared array');
    let reply: Message;
    try {
      reply = await link.request({ type: MessageType.ForwardedIo, op, allocation: NIL_ALLOCATION, offset, length, fua: false, data });
    } catch (error) {
      throw new HolderUnavailableError(`the array holder's link: ${(error as Error).message}`, { cause: error });
    }
    if (isUnavailable(reply)) throw new HolderUnavailableError(`the array holder answered ${describe(reply)}`);
    return { reply, link };
  }
}

const EMPTY = Buffer.alloc(0);

export function isOk(reply: Message): boolean {
  return reply.type === MessageType.CommandComplete && reply.status === Status.Ok;
}

const STATUS_NAMES: Record<number, string> = {
  [Status.Ok]: 'ok',
  [Status.NoSpace]: 'no space',
  [Status.Locked]: 'locked',
  [Status.UnknownAllocation]: 'unknown allocation',
  [Status.NotResident]: 'not the holder',
  [Status.StaleEpoch]: 'stale epoch',
  [Status.NotPartner]: 'not a partner yet',
  [Status.Invalid]: 'invalid request',
  [Status.IoError]: 'I/O error',
  [Status.ShuttingDown]: 'shutting down',
};

export function describe(reply: Message): string {
  if (reply.type === MessageType.CommandComplete) return STATUS_NAMES[reply.status] ?? `status ${reply.status}`;
  return `message type ${reply.type}`;
}
