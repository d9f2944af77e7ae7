// Reads exact byte counts from a socket with one deadline for the whole conversation: a wait that
// outlives it ends with a HangError naming what was awaited, so "the server hung" is a finding with
// a reason rather than a test timeout.
import type { Socket } from 'node:net';

export class HangError extends Error {
  override name = 'HangError';
}

export class ByteReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private ended = false;
  private expired: string | null = null;
  private wake: (() => void) | null = null;
  /** Bytes received in all, for "the server went quiet" checks. */
  received = 0;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.received += chunk.length;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
  }

  get closed(): boolean {
    return this.ended && this.length === 0;
  }

  /** Every later wait fails with a HangError (the caller's deadline passed). */
  expire(reason: string): void {
    this.expired = reason;
    this.notify();
  }

  /** Exactly `count` bytes, or null when the server closed first. */
  async take(count: number, what: string): Promise<Buffer | null> {
    const got = await this.peek(count, what);
    if (got === null) return null;
    this.consume(count);
    return got;
  }

  async peek(count: number, what: string): Promise<Buffer | null> {
    while (this.length < count) {
      if (this.ended) return null;
      if (this.expired !== null) throw new HangError(`${this.expired} while waiting for ${what}`);
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    // Join only the leading chunks that the answer spans: a large backlog is not copied per read.
    if (count > 0 && (this.chunks[0] as Buffer).length < count) {
      let joined = 0;
      let pieces = 0;
      while (joined < count) joined += (this.chunks[pieces++] as Buffer).length;
      this.chunks.splice(0, pieces, Buffer.concat(this.chunks.slice(0, pieces)));
    }
    return (this.chunks[0] ?? Buffer.alloc(0)).subarray(0, count);
  }

  /** Resolves when the server has closed (leftover bytes are dropped), or throws HangError. */
  async untilClosed(what: string): Promise<void> {
    for (;;) {
      this.chunks = [];
      this.length = 0;
      if (this.ended) return;
      if (this.expired !== null) throw new HangError(`${this.expired} while waiting for ${what}`);
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private consume(count: number): void {
    if (count === 0) return;
    const first = this.chunks[0] as Buffer;
    this.chunks[0] = first.subarray(count);
    this.length -= count;
    if ((this.chunks[0] as Buffer).length === 0) this.chunks.shift();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}
