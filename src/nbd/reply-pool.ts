// Buffers for the per-request data path, used again instead of allocated per request.
//
// A 1 MiB read used to allocate a fresh 1 MiB ArrayBuffer for its reply, and a 1 MiB write arrived
// in sixteen fresh 64 KiB socket chunks. V8 counts such memory as external and collects garbage
// whenever enough of it was allocated since the last collection: a client reading 600 MiB made the
// node collect every few dozen requests, up to 300 ms at a time, and heartbeats waited. A buffer
// here has `headroom` bytes in front (room for a reply header), then a power-of-two payload of at
// least 4 KiB. Whoever took a buffer gives it back at its one release point (a reply: its socket
// write callback; a write payload: once the volume's write settled); up to `retainBytes` of free
// buffers are kept. The bytes-in-flight bounds already cap how many are out at once.
import { sizeClassOf } from '../core/index.js';

/** The smallest buffer handed out: smaller payloads are cheaper in Node's shared slab. */
export const MIN_PAYLOAD_CLASS_BYTES = 4096;

/** Room in front of the payload for the largest read reply header (structured: 20 + 8 bytes). */
export const REPLY_HEADER_ROOM = 32;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private retainedBytes = 0;
  private out = 0;

  constructor(
    private readonly retainBytes: number,
    private readonly headroom = 0,
  ) {}

  /** A buffer whose payload (from the headroom on) holds at least `payloadBytes`. */
  take(payloadBytes: number): Buffer {
    this.out++;
    const size = this.headroom + payloadClassOf(payloadBytes);
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.retainedBytes -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Gives back a buffer that take() returned; nothing may still read or write it. */
  give(buffer: Buffer): void {
    this.out--;
    const size = buffer.length;
    if (this.retainedBytes + size > this.retainBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buffer);
    this.retainedBytes += size;
  }

  /**
   * A buffer taken and known never to come back (its socket died with it still queued): counted
   * as returned, left to the collector.
   */
  forget(): void {
    this.out--;
  }

  /** Bytes of free buffers kept for the next requests. */
  get retained(): number {
    return this.retainedBytes;
  }

  /** Buffers taken and not yet given back (or forgotten): what release accounting is checked by. */
  get outstanding(): number {
    return this.out;
  }
}

/** Read reply buffers: room for any reply header in front of the payload. */
export class ReplyPool extends BufferPool {
  constructor(retainBytes: number) {
    super(retainBytes, REPLY_HEADER_ROOM);
  }
}

export function payloadClassOf(bytes: number): number {
  return sizeClassOf(bytes, MIN_PAYLOAD_CLASS_BYTES);
}
