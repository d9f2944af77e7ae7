// A volume this node exports but does not own: every request is executed by the owner (the
// allocation's lock master) through its memory manager, so page locks, mirroring and the
// acknowledgement rule are the owner's, one place for each page. Reads and writes larger than one
// forwarded I/O travel as several, in parallel.
import { IoOp, MAX_IO_BYTES, MessageType, type Message, type PartnerLink } from '../partner/index.js';
import { VolumeError, type Extent, type Volume, type ZeroOptions } from '../volume/index.js';
import { describe, isOk, isUnavailable } from './remote-array.js';
import { OwnerUnavailableError } from './volume-switch.js';

export class ForwardedVolume implements Volume {
  readonly flushCoversAllConnections = true;

  constructor(
    readonly name: string,
    private readonly allocation: string,
    /** Grows with an online resize (VolumeSwitch.resize). */
    public sizeBytes: number,
    private readonly ownerName: string,
    private readonly owner: () => PartnerLink | null,
  ) {}

  read(offset: number, into: Buffer): Promise<void> {
    if (into.length <= MAX_IO_BYTES) return this.readPiece(offset, into);
    return this.pieces(into.length, (at, length) => this.readPiece(offset + at, into.subarray(at, at + length)));
  }

  /**
   * One forwarded read; the link reads the reply into `into` itself where it can, else it is copied
   * out of its segment. What ask() does, inline: one async frame per read, the hot request here.
   */
  private async readPiece(offset: number, into: Buffer): Promise<void> {
    const link = this.linkToOwner();
    let answer: Message;
    try {
      answer = await link.request({ type: MessageType.ForwardedIo, op: IoOp.Read, allocation: this.allocation, offset, length: into.length, fua: false, data: EMPTY }, into);
    } catch (error) {
      throw this.unreachable(error);
    }
    const reply = answer;
    if (isUnavailable(reply)) throw this.refused(reply);
    const fits = reply.type === MessageType.IoData && reply.data.length === into.length;
    if (fits && (reply.data.buffer !== into.buffer || reply.data.byteOffset !== into.byteOffset)) reply.data.copy(into);
    link.release(reply);
    if (!fits) throw this.failed('read', reply);
  }

  /**
   * The payload goes by reference, as the pieces it arrived in (a WRITE's pooled segments): no copy
   * into one buffer. The caller keeps the pieces until this settles (they are on the wire until the
   * owner answered), and after a failure (the link may still hold them) does not use them again.
   */
  async write(offset: number, data: readonly Buffer[], fua: boolean): Promise<void> {
    let total = 0;
    for (const piece of data) total += piece.length;
    await this.pieces(total, async (at, length) => {
      const reply = await this.forward(IoOp.Write, offset + at, length, fua, data.length === 1 ? (data[0] as Buffer).subarray(at, at + length) : range(data, at, length));
      if (!isOk(reply)) throw this.failed('write', reply);
    });
  }

  async flush(): Promise<void> {
    const reply = await this.forward(IoOp.Flush, 0, 0, false);
    if (!isOk(reply)) throw this.failed('flush', reply);
  }

  async trim(offset: number, lengthBytes: number, fua: boolean): Promise<void> {
    const reply = await this.forward(IoOp.Trim, offset, lengthBytes, fua);
    if (!isOk(reply)) throw this.failed('trim', reply);
  }

  async zero(offset: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    if (options.fastZero) throw new VolumeError('ENOTSUP', 'zeroing is no faster than writing zeroes on this volume');
    const reply = await this.forward(IoOp.Zero, offset, lengthBytes, options.fua);
    if (!isOk(reply)) throw this.failed('zero', reply);
  }

  async cache(_offset: number, _lengthBytes: number): Promise<void> {}

  async blockStatus(_offset: number, lengthBytes: number): Promise<Extent[]> {
    return [{ lengthBytes, flags: 0 }];
  }

  async close(): Promise<void> {}

  private async forward(op: IoOp, offset: number, length: number, fua: boolean, data: Buffer | readonly Buffer[] = EMPTY): Promise<Message> {
    return this.ask(this.linkToOwner(), op, offset, length, fua, data, null);
  }

  private linkToOwner(): PartnerLink {
    const link = this.owner();
    if (!link) throw new OwnerUnavailableError(`volume ${this.name}: its owner, node ${this.ownerName}, is not connected`);
    return link;
  }

  /** The owner's answer on `link`, which takes back the reply's data once it was copied out; unavailable owners as OwnerUnavailableError. */
  private async ask(link: PartnerLink, op: IoOp, offset: number, length: number, fua: boolean, data: Buffer | readonly Buffer[], into: Buffer | null): Promise<Message> {
    let reply: Message;
    try {
      reply = await link.request({ type: MessageType.ForwardedIo, op, allocation: this.allocation, offset, length, fua, data }, into);
    } catch (error) {
      throw this.unreachable(error);
    }
    if (isUnavailable(reply)) throw this.refused(reply);
    return reply;
  }

  private unreachable(error: unknown): OwnerUnavailableError {
    return new OwnerUnavailableError(`volume ${this.name}: node ${this.ownerName}: ${(error as Error).message}`, { cause: error });
  }

  private refused(reply: Message): OwnerUnavailableError {
    return new OwnerUnavailableError(`volume ${this.name}: node ${this.ownerName} answered ${describe(reply)}`);
  }

  private failed(what: string, reply: Message): VolumeError {
    return new VolumeError('EIO', `volume ${this.name}: ${what} on node ${this.ownerName} failed: ${describe(reply)}`);
  }

  /**
   * Settles only once every piece has: a failed piece must not give its caller back the buffer
   * (a pooled NBD reply) while other pieces' answers are still being read into it.
   */
  private async pieces(lengthBytes: number, work: (at: number, length: number) => Promise<void>): Promise<void> {
    if (lengthBytes <= MAX_IO_BYTES) return work(0, lengthBytes);
    const jobs: Array<Promise<void>> = [];
    for (let at = 0; at < lengthBytes; at += MAX_IO_BYTES) jobs.push(work(at, Math.min(MAX_IO_BYTES, lengthBytes - at)));
    const results = await Promise.allSettled(jobs);
    for (const result of results) if (result.status === 'rejected') throw result.reason;
  }
}

const EMPTY = Buffer.alloc(0);

/** Bytes `at` … `at + length` of a payload in pieces, as views of those pieces. */
function range(pieces: readonly Buffer[], at: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (const piece of pieces) {
    const end = start + piece.length;
    if (end > at && start < at + length) out.push(piece.subarray(Math.max(0, at - start), Math.min(piece.length, at + length - start)));
    start = end;
  }
  return out;
}
