// Incremental framer for the transmission phase: socket chunks in, whole requests out.
//
// TCP cuts the stream anywhere, so a header or a WRITE payload may span many chunks. The framer
// keeps the partial header in a fixed 28-byte buffer. A payload is handed on as the list of views
// into the socket chunks it arrived in (no copy: the volume copies once, into its own memory or
// with writev), but only after its length was checked against the payload limit: an oversized
// WRITE is read and thrown away (never kept) and handed on flagged as oversized so the caller can
// answer it with an error and keep the connection in sync.
//
// Every request is admitted before it starts, and before one byte of its payload is kept: the sink
// says no when its connection has too much in flight (or has started enough in this turn). The
// framer then stops right there, keeps the rest of the chunk, and goes on when resume() is called.
// So however many requests one chunk holds, no more than the bound are ever started, and the
// connection stops reading its socket meanwhile.
import { InputError } from '../core/index.js';
import { Command, MAX_PAYLOAD_BYTES, REQUEST_HEADER_BYTES, REQUEST_MAGIC } from './constants.js';
import { decodeRequestHeader, type Request } from './wire.js';

export class FramingError extends InputError {
  override name = 'FramingError';
}

export interface RequestSink {
  /** Whether `request` may start now; false holds the framer until resume(). */
  admits(request: Request): boolean;
  /** An admitted request, whole (a WRITE with its payload). */
  onRequest(request: Request): void;
}

export class RequestFramer {
  private readonly header = Buffer.alloc(REQUEST_HEADER_BYTES);
  private headerFilled = 0;
  private pending: Request | null = null;
  private payloadMissing = 0;
  private discardRemaining = 0;
  private failed = false;
  /** A decoded request the sink has not admitted yet. */
  private held: Request | null = null;
  /** Input behind the held request, in order; only ever non-empty while one is held. */
  private readonly input: Buffer[] = [];

  constructor(
    private readonly sink: RequestSink,
    private readonly maxPayloadBytes = MAX_PAYLOAD_BYTES,
  ) {}

  /** Consumes a chunk; throws FramingError (and refuses further input) when the stream is not NBD. */
  push(chunk: Buffer): void {
    if (this.failed) return;
    if (this.held !== null) {
      this.input.push(chunk);
      return;
    }
    this.consume(chunk);
  }

  /** Tries the held request again, and goes on with what arrived behind it. */
  resume(): void {
    if (this.failed || this.held === null) return;
    const request = this.held;
    if (!this.sink.admits(request)) return;
    this.held = null;
    this.begin(request);
    while (this.held === null && this.input.length > 0 && !this.failed) this.consume(this.input.shift() as Buffer);
  }

  /** True when a decoded request waits for the sink's admission. */
  get holding(): boolean {
    return this.held !== null;
  }

  /** True when the stream stands between two requests (nothing half-read, nothing held). */
  get idle(): boolean {
    return this.pending === null && this.headerFilled === 0 && this.held === null;
  }

  private consume(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.pending !== null) at = this.fillPayload(chunk, at);
      else if (this.headerFilled > 0 || chunk.length - at < REQUEST_HEADER_BYTES) at = this.fillHeader(chunk, at);
      else at = this.startRequest(chunk, at);
      if (this.held !== null) {
        if (at < chunk.length) this.input.unshift(chunk.subarray(at));
        return;
      }
    }
  }

  private fillHeader(chunk: Buffer, at: number): number {
    const take = Math.min(REQUEST_HEADER_BYTES - this.headerFilled, chunk.length - at);
    chunk.copy(this.header, this.headerFilled, at, at + take);
    this.headerFilled += take;
    if (this.headerFilled === REQUEST_HEADER_BYTES) {
      this.headerFilled = 0;
      this.startRequest(this.header, 0);
    }
    return at + take;
  }

  /** Decodes a whole header at `at` of `source`; returns where the payload (if any) starts. */
  private startRequest(source: Buffer, at: number): number {
    const magic = source.readUInt32BE(at);
    if (magic !== REQUEST_MAGIC) {
      this.failed = true;
      throw new FramingError(`bad request magic 0x${magic.toString(16).padStart(8, '0')}`);
    }
    const request = decodeRequestHeader(source, at);
    if (request.type === Command.Write && request.length > this.maxPayloadBytes) request.oversized = true;
    if (this.sink.admits(request)) this.begin(request);
    else this.held = request;
    return at + REQUEST_HEADER_BYTES;
  }

  /** An admitted request: handed on now, or once its payload is in. */
  private begin(request: Request): void {
    if (request.type !== Command.Write || request.length === 0) {
      this.sink.onRequest(request);
      return;
    }
    if (request.oversized) this.discardRemaining = request.length;
    else {
      request.payload = [];
      this.payloadMissing = request.length;
    }
    this.pending = request;
  }

  private fillPayload(chunk: Buffer, at: number): number {
    const request = this.pending as Request;
    if (request.oversized) {
      const take = Math.min(this.discardRemaining, chunk.length - at);
      this.discardRemaining -= take;
      if (this.discardRemaining === 0) this.finish(request);
      return at + take;
    }
    const take = Math.min(this.payloadMissing, chunk.length - at);
    (request.payload as Buffer[]).push(chunk.subarray(at, at + take));
    this.payloadMissing -= take;
    if (this.payloadMissing === 0) this.finish(request);
    return at + take;
  }

  private finish(request: Request): void {
    this.pending = null;
    this.sink.onRequest(request);
  }
}
