// Read replies are written from buffers that are used again, not allocated per request.
//
// A 1 MiB read used to allocate a fresh 1 MiB ArrayBuffer for its reply. V8 counts such memory as
// external and collects garbage whenever enough of it was allocated since the last collection: a
// client reading 600 MiB made the node collect every few dozen requests, up to 300 ms at a time,
// and heartbeats waited. Buffers here come in power-of-two sizes from 4 KiB up; the connection
// gives each back once its reply has been written to the socket (the write callback), and up to
// `retainBytes` of them are kept for the next reads. The bytes-in-flight bounds already cap how many
// are out at once.
const MIN_CLASS_BYTES = 4096;

export class ReplyPool {
  private readonly free = new Map<number, Buffer[]>();
  private retainedBytes = 0;

  constructor(private readonly retainBytes: number) {}

  /** A buffer of at least `bytes` (its class size: power of two, at least 4 KiB). */
  take(bytes: number): Buffer {
    const size = classOf(bytes);
    const list = this.free.get(size);
    const buffer = list?.pop();
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

  get retained(): number {
    return this.retainedBytes;
  }
}

export function classOf(bytes: number): number {
  return Math.max(MIN_CLASS_BYTES, 2 ** Math.ceil(Math.log2(bytes)));
}
