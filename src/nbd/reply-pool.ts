// Read replies are written from buffers that are used again, not allocated per request.
//
// A 1 MiB read used to allocate a fresh 1 MiB ArrayBuffer for its reply. V8 counts such memory as
// external and collects garbage whenever enough of it was allocated since the last collection: a
// client reading 600 MiB made the node collect every few dozen requests, up to 300 ms at a time,
// and heartbeats waited. A buffer here has room for any reply header, then a power-of-two payload
// of at least 4 KiB; the connection gives it back once its reply has been written to the socket
// (the write callback). Up to `retainBytes` of free buffers are kept; the bytes-in-flight bounds
// already cap how many are out at once.
const MIN_PAYLOAD_CLASS_BYTES = 4096;

/** Room in front of the payload for the largest read reply header (structured: 20 + 8 bytes). */
export const REPLY_HEADER_ROOM = 32;

export class ReplyPool {
  private readonly free = new Map<number, Buffer[]>();
  private retainedBytes = 0;

  constructor(private readonly retainBytes: number) {}

  /** A buffer whose payload (from REPLY_HEADER_ROOM on) holds at least `payloadBytes`. */
  take(payloadBytes: number): Buffer {
    const size = REPLY_HEADER_ROOM + payloadClassOf(payloadBytes);
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.retainedBytes -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Gives back a buffer that take() returned; nothing may still read or write it. */
  give(buffer: Buffer): void {
    const size = buffer.length;
    if (this.retainedBytes + size > this.retainBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buffer);
    this.retainedBytes += size;
  }

  /** Bytes of free buffers kept for the next reads. */
  get retained(): number {
    return this.retainedBytes;
  }
}

export function payloadClassOf(bytes: number): number {
  return Math.max(MIN_PAYLOAD_CLASS_BYTES, 2 ** Math.ceil(Math.log2(bytes)));
}
